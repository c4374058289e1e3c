"""What the stack's browser tests share: contexts with relay-only calls, launch, join."""
from __future__ import annotations

import re

from playwright.sync_api import expect

# Every RTCPeerConnection the page makes is relay-only (TURN), and kept for inspection:
# a call that connects then went through coturn, whatever candidates loopback offers.
RELAY_ONLY = """(() => {
  const Native = window.RTCPeerConnection;
  const made = [];
  function RelayOnly(config = {}, ...rest) {
    const pc = new Native({ ...config, iceTransportPolicy: "relay" }, ...rest);
    made.push(pc);
    return pc;
  }
  RelayOnly.prototype = Native.prototype;
  Object.setPrototypeOf(RelayOnly, Native);
  window.RTCPeerConnection = RelayOnly;
  window.__peerConnections = made;
})();"""

# The candidate types of each connected peer's selected pair ("relay" through TURN).
SELECTED_CANDIDATES = """async () => {
  const found = [];
  for (const pc of window.__peerConnections || []) {
    if (pc.connectionState !== "connected") continue;
    const stats = await pc.getStats();
    stats.forEach((report) => {
      if (report.type !== "transport" || !report.selectedCandidatePairId) return;
      const pair = stats.get(report.selectedCandidatePairId);
      found.push([stats.get(pair.localCandidateId).candidateType,
                  stats.get(pair.remoteCandidateId).candidateType]);
    });
  }
  return found;
}"""

PLAYING = "el => el && el.readyState >= 2 && !el.paused && el.videoWidth > 0"
PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}


def relay_context(browser, **options):
    """A context whose calls are relay-only; ``context.console`` keeps what its pages
    (and frames) logged, for a failure message."""
    context = browser.new_context(locale="en-US", **options)
    context.set_default_timeout(20_000)
    context.add_init_script(RELAY_ONLY)
    context.console = []
    context.on("console", lambda message: context.console.append(
        f"{message.type}: {message.text}"))
    return context


def launch_from_schedule(page, url: str, sandbox_id: str) -> int:
    """"Start virtual visit" on the sandbox schedule; the app's appointment id."""
    page.goto(url + "/sandbox")
    row = page.locator(f'[data-testid="sandbox-appointment"][data-appointment-id="{sandbox_id}"]')
    row.get_by_role("link", name=re.compile(r"^Start virtual visit")).click()
    page.wait_for_url(re.compile(r"/visit/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def join_from_link(page, link: str):
    page.goto(link)
    expect(page).to_have_url(re.compile(r"/join$"))
    page.get_by_test_id("join-button").click()
    lobby = page.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "waiting")
    return lobby


def expect_in_call(scope, timeout: float = 30_000) -> None:
    """``scope``: a page or a frame. The call connected and a remote video plays."""
    expect(scope.get_by_test_id("call")).to_have_attribute("data-state", "connected",
                                                            timeout=timeout)
    scope.get_by_test_id("remote-video").first.wait_for(timeout=timeout)
    scope.wait_for_function(f"() => ({PLAYING})(document.querySelector("
                            "'[data-testid=remote-video]'))", timeout=timeout)


def relayed(scope) -> list[list[str]]:
    return scope.evaluate(SELECTED_CANDIDATES)
