"""The device test in Debian Chromium with fake devices and a real coturn on loopback: a
clean run passes everything and files an Observation in the sandbox EHR; a blocked
permission, a silent microphone, a black camera, a degraded network and a wrong TURN
secret each give the grades and guidance they should; axe in three languages. And a
relay-only visit call through the same coturn, its messages out of order."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import struct
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import (
    CHROMIUM, CHROMIUM_ARGS, free_port, screenshot, start_server, stop_server)
from tests.browser.test_patient_join_page import join_link
from tests.browser.test_provider_visit import launch_visit, patient_token
from tests.stack.helpers import PLAYING, RELAY_ONLY, SELECTED_CANDIDATES

pytestmark = pytest.mark.browser

TURNSERVER = "/usr/bin/turnserver"
SECRET = "device-test-turn-secret"
CHECKS = ["speaker", "microphone", "camera", "connection", "test-call"]
PHONE = {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True}
# Short call: two 4-second halves (relay-only, then best path) keep the file fast. The
# bitrate is measured over a half's last 2 s: with 3-second halves, on a loaded machine,
# that was still the encoder's ramp-up (455 kbps received, graded "choppy").
# Chromium's fake camera is encoded at 480-510 kbps on loopback, right on the default pass
# line for video (500 kbps): "300,100" here, so a clean run passes whatever the encoder's
# ramp-up did, and the degraded network (200 kbit/s) still falls below it. Jitter "30,60":
# on this 2-core machine under a full suite the loopback call's audio jitter measured
# 10.5-16.8 ms (the default pass line is 10), the scheduler's, not a network's; the
# degraded network's 5 % loss still fails the call on its own.
SERVER_ENV = {"VV_DEVICE_TEST_CALL_SECONDS": "8", "VV_DEVICE_TEST_TRANSPORT_TIMEOUT_SECONDS": "4",
              "VV_DEVICE_TEST_VIDEO_KBPS": "300,100", "VV_DEVICE_TEST_JITTER_MS": "30,60"}


@dataclass
class Coturn:
    port: int
    pidfile: Path

    def turn_urls(self) -> str:
        return (f"turn:127.0.0.1:{self.port}?transport=udp,"
                f"turn:127.0.0.1:{self.port}?transport=tcp")


@pytest.fixture(scope="module")
def coturn(tmp_path_factory):
    """coturn on free loopback ports with REST credentials (BROWSER_TESTING.md's recipe)."""
    if not Path(TURNSERVER).exists():
        pytest.fail(f"{TURNSERVER} is missing: `make install-test` installs Debian coturn")
    workdir = tmp_path_factory.mktemp("coturn")
    port = free_port()
    relay_low = random.randrange(40000, 60000, 100)
    pidfile = workdir / "turnserver.pid"
    log = open(workdir / "turnserver.log", "wb")  # noqa: SIM115  (kept for the server's life)
    process = subprocess.Popen([
        TURNSERVER, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
        f"--listening-port={port}", f"--min-port={relay_low}", f"--max-port={relay_low + 60}",
        "--use-auth-secret", f"--static-auth-secret={SECRET}", "--realm=test.local",
        "--fingerprint", "--allow-loopback-peers", "--no-cli", "--no-multicast-peers",
        "--no-tls", "--no-dtls", f"--pidfile={pidfile}", "--log-file=stdout", "--simple-log"],
        stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"turnserver did not start:\n{(workdir / 'turnserver.log').read_text()}")
        time.sleep(0.05)  # polling for the pidfile, not waiting a fixed time
    yield Coturn(port, pidfile)
    pid = int(pidfile.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory, coturn):
    """One app for the module, its TURN pointed at our coturn with the right secret."""
    live = start_server(tmp_path_factory.mktemp("device-test"), VV_TURN_URLS=coturn.turn_urls(),
                        VV_TURN_SECRET=SECRET, **SERVER_ENV)
    yield live
    stop_server(live)


def launch(browser, *extra: str, fake_ui: bool = True):
    args = [a for a in CHROMIUM_ARGS if fake_ui or a != "--use-fake-ui-for-media-stream"]
    return browser.browser_type.launch(executable_path=CHROMIUM, args=[*args, *extra])


def new_page(browser, locale: str = "en-US"):
    context = browser.new_context(**PHONE, locale=locale)
    context.set_default_timeout(15_000)
    return context, context.new_page()


def run_device_test(page, url: str) -> dict[str, str]:
    """Open the page, start, answer the speaker question, wait for the summary."""
    page.goto(url)
    page.get_by_test_id("device-test-start").click()
    page.get_by_test_id("speaker-yes").click()
    expect(page.get_by_test_id("device-test-summary")).to_have_attribute(
        "data-status", re.compile("^(pass|warn|fail)$"), timeout=60_000)
    return {name: page.get_by_test_id(f"check-{name}").get_attribute("data-status")
            for name in CHECKS}


def details(page, name: str) -> str:
    """The check's message and measurements, as the patient reads them."""
    check = page.get_by_test_id(f"check-{name}")
    return " ".join(check.locator(f"[data-role={role}]").inner_text()
                    for role in ("message", "details"))


def write_silent_wav(path: Path, seconds: float = 10.0) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48000)
        out.writeframes(b"\0\0" * int(48000 * seconds))
    return path


def write_black_y4m(path: Path, frames: int = 30) -> Path:
    """A black 320x240 video: Y plane 16 (video black), chroma 128."""
    width, height = 320, 240
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode())
        frame = bytes([16]) * (width * height) + bytes([128]) * (width * height // 2)
        for _ in range(frames):
            out.write(b"FRAME\n" + frame)
    return path


def test_mos_follows_the_simplified_e_model(server, browser):
    context, page = new_page(browser)
    page.goto(f"{server.url}/device-test")

    values = page.evaluate("""async () => {
      const g = await import('/static/device_test/grading.js');
      return { perfect: g.mos(0, 0, 0), typical: g.mos(100, 5, 1), bad: g.mos(600, 40, 10),
               nothing: g.mos(NaN, 0, 0), rtt: [g.grade(249, [250, 400]), g.grade(300, [250, 400]),
               g.grade(401, [250, 400])], kbps: [g.grade(600, [500, 150]), g.grade(300, [500, 150]),
               g.grade(100, [500, 150])], overall: g.overall(['skipped', 'skipped']) };
    }""")
    context.close()

    r = 93.2 - (100 + 2 * 5 + 10) / 40 - 2.5
    expected = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    assert values["perfect"] == pytest.approx(4.41, abs=0.01)
    assert values["typical"] == pytest.approx(expected, abs=0.01)
    assert values["bad"] == pytest.approx(1.05, abs=0.01)  # R = 11.2
    assert values["nothing"] is None
    assert values["rtt"] == ["pass", "warn", "fail"]
    assert values["kbps"] == ["pass", "warn", "fail"]
    assert values["overall"] == "fail"


def test_clean_run_passes_every_check_and_files_an_observation(server, browser):
    link = join_link(server, "appt-2")
    context, page = new_page(browser)
    page.goto(link)
    device_link = page.get_by_test_id("device-test-link")
    href = device_link.get_attribute("href")
    assert href.startswith("/device-test?ctx=")

    statuses = run_device_test(page, server.url + href)

    screenshot(page, "device-test-clean")
    assert statuses == dict.fromkeys(CHECKS, "pass"), [details(page, n) for n in CHECKS
                                                        if statuses[n] != "pass"]
    transports = page.get_by_test_id("ice-transport")
    expect(transports).to_have_count(2)
    for kind in ("turn-udp", "turn-tcp"):
        row = page.locator(f'[data-testid="ice-transport"][data-kind="{kind}"]')
        expect(row).to_have_attribute("data-status", "pass")
    expect(page.get_by_test_id("device-test-summary")).to_contain_text(
        "Your video visit should work well")
    expect(page.get_by_test_id("device-test-saved")).to_have_attribute("data-written-back", "true")
    with page.expect_download() as download:
        page.get_by_test_id("device-test-download").click()
    report = json.loads(Path(download.value.path()).read_text())
    assert report["overall"] == "pass" and report["checks"]["test_call"]["mos"] > 3.6
    assert "context" not in report  # the token is a credential; it stays out of the file
    context.close()
    deadline = time.monotonic() + 20
    rows = []
    while time.monotonic() < deadline:
        rows = [r for r in json.loads(server.flask("outbox", "list", "--json"))
                if r["business_identifier"].startswith("device-test-")]
        if rows and rows[0]["status"] == "sent":
            break
        time.sleep(0.5)  # the server's own delivery loop sends it
    assert rows and rows[0]["status"] == "sent", rows
    provider_context, provider = new_page(browser)
    launch_visit(server, provider, "appt-2")
    badge = provider.locator('[data-testid="participant"][data-role="patient"] '
                             '[data-testid="participant-device-test"]')
    expect(badge).to_have_attribute("data-status", "pass")
    expect(badge).to_have_text("Device test: passed")
    provider_context.close()


def test_blocked_permission_fails_microphone_and_camera_with_guidance(server, browser):
    blocking = launch(browser, "--deny-permission-prompts", fake_ui=False)
    context, page = new_page(blocking)

    statuses = run_device_test(page, f"{server.url}/device-test")

    screenshot(page, "device-test-blocked")
    assert statuses["microphone"] == "fail" and statuses["camera"] == "fail"
    assert "blocked" in details(page, "microphone")
    assert "Click the icon to the left of the web address" in details(page, "camera")
    assert statuses["connection"] == "pass"
    # The call still runs, on a synthetic picture and tone. Its grade is not this test's
    # point: on a loaded machine a short call may still read "choppy" (warn).
    assert statuses["test-call"] in ("pass", "warn"), details(page, "test-call")
    assert "could not connect" not in details(page, "test-call").lower()
    expect(page.get_by_test_id("device-test-summary")).to_have_attribute("data-status", "fail")
    context.close()
    blocking.close()


def test_silent_microphone_warns_and_black_camera_fails(server, browser, tmp_path):
    silent = write_silent_wav(tmp_path / "silent.wav")
    black = write_black_y4m(tmp_path / "black.y4m")
    bad = launch(browser, f"--use-file-for-fake-audio-capture={silent}",
                 f"--use-file-for-fake-video-capture={black}")
    context, page = new_page(bad)

    statuses = run_device_test(page, f"{server.url}/device-test")

    screenshot(page, "device-test-silent-black")
    assert statuses["microphone"] == "warn"
    assert "muted" in details(page, "microphone")
    assert statuses["camera"] == "fail"
    assert "black" in details(page, "camera")
    context.close()
    bad.close()


def test_degraded_network_drops_connection_and_call_grades(server, browser):
    context, page = new_page(browser)
    cdp = context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {
        # 200 kbit/s each way: Chromium does not delay WebSocket frames, so the throughput
        # probes are what the connection check can see of this network.
        "offline": False, "latency": 150, "downloadThroughput": 25_000,
        "uploadThroughput": 25_000, "packetLoss": 5})

    statuses = run_device_test(page, f"{server.url}/device-test")

    screenshot(page, "device-test-degraded")
    assert statuses["connection"] in ("warn", "fail"), details(page, "connection")
    assert statuses["test-call"] in ("warn", "fail"), details(page, "test-call")
    assert statuses["microphone"] == "pass" and statuses["camera"] == "pass"
    context.close()


def test_wrong_turn_secret_fails_the_turn_checks_and_the_rest_still_runs(
        browser, coturn, tmp_path):
    wrong = start_server(tmp_path, VV_TURN_URLS=coturn.turn_urls(), VV_TURN_SECRET="not-it",
                         **SERVER_ENV)
    try:
        context, page = new_page(browser)

        statuses = run_device_test(page, f"{wrong.url}/device-test")

        screenshot(page, "device-test-wrong-turn-secret")
        for transport in page.get_by_test_id("ice-transport").all():
            assert transport.get_attribute("data-status") == "fail"
            assert "refused our sign-in" in transport.inner_text()
        assert statuses["connection"] == "warn"
        assert statuses["test-call"] == "warn", details(page, "test-call")
        assert "relay server failed" in details(page, "test-call")
        assert statuses["microphone"] == "pass" and statuses["camera"] == "pass"
        context.close()
    finally:
        stop_server(wrong)


@pytest.mark.parametrize("lang", ["en", "es", "pt_BR"])
def test_page_has_no_serious_accessibility_violations(server, browser, lang):
    context, page = new_page(browser)
    page.goto(f"{server.url}/device-test?lang={lang}")

    found = serious_violations(page)

    screenshot(page, f"device-test-{lang}")
    assert found == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    context.close()


# What a loaded server with several processes can do to the order of a call's messages,
# made certain: a page holds back each offer it sends for 1.5 s (the candidates gathered for
# it reach the other side first) and hears its own call_join reply (with the ICE servers)
# 3 s late (the others' offer comes before it). Both were seen in CI: a relay-only call
# stuck "connecting".
SIGNALS_OUT_OF_ORDER = """(() => {
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    if (typeof data === "string" && data.includes('"signal"') && data.includes('"offer"')) {
      setTimeout(() => send.call(this, data), 1500);
      return;
    }
    return send.call(this, data);
  };
  const handler = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
  Object.defineProperty(WebSocket.prototype, "onmessage", {
    configurable: true,
    get() { return handler.get.call(this); },
    set(listener) {
      handler.set.call(this, listener && ((event) => {
        if (typeof event.data === "string" && event.data.includes('"ice_servers"')) {
          setTimeout(() => listener.call(this, event), 3000);
          return undefined;
        }
        return listener.call(this, event);
      }));
    },
  });
})();"""


def test_a_relay_only_call_connects_whatever_order_its_messages_come_in(server, browser):
    """Relay-only, a candidate lost before its offer, or a peer made before the TURN
    servers are known, means no path at all: the page keeps early candidates until their
    offer comes, and handles the others' messages only once its own call_join is back."""
    provider_context = browser.new_context(locale="en-US")
    provider_context.add_init_script(RELAY_ONLY)
    provider_context.add_init_script(SIGNALS_OUT_OF_ORDER)
    patient_context, patient = new_page(browser)
    patient_context.add_init_script(RELAY_ONLY)
    patient_context.add_init_script(SIGNALS_OUT_OF_ORDER)
    provider = provider_context.new_page()
    appointment_id = launch_visit(server, provider, "appt-3")
    patient.goto(f"{server.url}/j/{patient_token(server, appointment_id)}")
    patient.get_by_test_id("join-button").click()
    lobby = patient.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "waiting")

    provider.get_by_test_id("admit").click()

    for page in (patient, provider):
        expect(page.get_by_test_id("call")).to_have_attribute("data-state", "connected",
                                                              timeout=30_000)
        page.wait_for_function(f"() => ({PLAYING})(document.querySelector('[data-testid=remote-video]'))")
        assert {tuple(pair) for pair in page.evaluate(SELECTED_CANDIDATES)} == {("relay", "relay")}
    provider_context.close()
    patient_context.close()
