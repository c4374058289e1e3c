"""The call's signalling in a real browser (static/js/call.js), two Call objects in one
page with real RTCPeerConnections, joined by an in-page relay in place of the server so
the order messages arrive in can be chosen: the server runs several handlers of a socket
at once (ops/socket_limits.py), so it does not keep that order itself."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

# Two calls, "alice" and "bob"; the relay delivers each signal after a macrotask, except
# that while `hold` says so, alice's restart offer waits until her new candidates have
# been delivered: a TURN restart's candidates overtaking its offer.
RESTART_WITH_CANDIDATES_FIRST = """
async () => {
  const { Call } = await import("/static/js/call.js");
  const warnings = [];
  const warn = console.warn;
  console.warn = (...args) => { warnings.push(args.map(String).join(" ")); warn(...args); };
  const calls = {};
  const held = { offer: null, holding: false, candidatesAfter: 0 };
  const log = [];
  const deliver = (from, to, data) => setTimeout(() => {
    log.push(`${from}>${to}:${data.description ? data.description.type : "cand"}`);
    calls[to].socket.handlers.signal({ ...data, from });
  }, 0);
  function socket(id) {
    return {
      id, handlers: {},
      on(event, handler) { this.handlers[event] = handler; }, off() {},
      timeout() {
        return { emitWithAck: async (event, data) => {
          if (event === "call_join") return { ok: true, ice_servers: [] };
          if (event !== "signal") return { ok: true };
          const { to, ...rest } = data;
          if (held.holding && id === "alice" && rest.description?.type === "offer") {
            held.offer = () => deliver(id, to, rest);
          } else if (held.holding && id === "alice" && rest.candidate) {
            deliver(id, to, rest);
            held.candidatesAfter += 1;
          } else {
            deliver(id, to, rest);
          }
          return { ok: true };
        } };
      },
    };
  }
  const strings = new Proxy({}, { get: (_target, key) => String(key) });
  for (const name of ["alice", "bob"]) {
    const root = document.createElement("section");
    root.innerHTML = '<div class="self"><video muted></video></div><div class="video-grid"></div>';
    document.body.append(root);
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
    calls[name] = new Call({ socket: socket(name), localStream: stream, root, strings });
    await calls[name].join();
  }
  const connected = (name, other, not = null) => new Promise((resolve, reject) => {
    const started = performance.now();
    const check = () => {
      const peer = calls[name].peers.get(other);
      if (peer && peer !== not && peer.pc.connectionState === "connected") return resolve(peer);
      if (performance.now() - started > 20000) {
        const states = Object.fromEntries(Object.entries(calls).map(([who, call]) => [who,
          [...call.peers.values()].map((p) => `${p.pc.connectionState}/${p.pc.signalingState}`)]));
        return reject(new Error(`${name} never connected: ${JSON.stringify(states)} `
                                + `${JSON.stringify(warnings)} held=${held.candidatesAfter} ${log.join(" ")}`));
      }
      setTimeout(check, 50);
    };
    check();
  });
  await calls.alice.offerTo("bob");
  const first = await connected("bob", "alice");

  held.holding = true;
  const restart = calls.alice.offerTo("bob", { restart: true });
  // Her new candidates go first; the offer follows once some have been delivered.
  await new Promise((resolve) => {
    const wait = () => (held.offer && held.candidatesAfter > 0) ? resolve() : setTimeout(wait, 20);
    wait();
  });
  await new Promise((resolve) => setTimeout(resolve, 200));
  // Where bob keeps them until the offer comes: for the peer it will make.
  const waiting = (calls.bob.early.get("alice") || []).length;
  held.holding = false;
  held.offer();
  await restart;
  const second = await connected("bob", "alice", first);
  await connected("alice", "bob");
  return {
    newPeer: first !== second,
    candidatesBeforeOffer: held.candidatesAfter,
    waitingForTheOffer: waiting,
    skipped: warnings.filter((line) => line.includes("candidate skipped")),
  };
}
"""


def test_a_restarts_candidates_that_overtake_its_offer_wait_for_the_new_peer(live_app,
                                                                               browser):
    context = browser.new_context()
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(f"{live_app.url}/healthz")

    result = page.evaluate(RESTART_WITH_CANDIDATES_FIRST)

    assert result["newPeer"] and result["candidatesBeforeOffer"] > 0, result
    # Kept for the new peer, not handed to the old one (which drops or stalls on them).
    assert result["waitingForTheOffer"] > 0, result
    # Each went to the peer the restart offer made, none to the old one (where it fails).
    assert result["skipped"] == [], result
    context.close()
