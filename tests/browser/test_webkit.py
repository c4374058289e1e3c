"""A second engine: the patient's pages in WebKit (Debian's WebKitGTK through WebKitWebDriver,
Safari's engine) at 390 px wide with mock camera and microphone, the provider in Chromium.
Join, the waiting room, the admit, the end and the device test run there. This WebKit has no
RTCPeerConnection, so the call itself is Chromium's (test_video_visit.py): here the patient
is told before the waiting room that this browser can't make the call, the provider sees
why, and the device test does not call that a pass."""
from __future__ import annotations

import re
import sqlite3

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations_webdriver
from tests.browser.conftest import start_server, stop_server
from tests.browser.test_provider_visit import launch_visit
from tests.browser.test_visit_return import LIVE_TRACKS, RECORD_STREAMS

# Its own server, two browsers and a device test: about 50 s here, over 100 s when the shared
# machine was at a load of 16; the suite's 120 s would be too close.
pytestmark = [pytest.mark.browser, pytest.mark.timeout(240)]

NO_CALLS = "can't make video calls"
# The waiting room's camera stream, kept to check at the end that its tracks were stopped.
KEEP_PREVIEW_STREAM = """window.__preview = document.querySelector('#lobby-preview').srcObject;
return __preview ? __preview.getTracks().filter(t => t.readyState === 'live').length : 0;"""
PREVIEW_RELEASED = """return document.querySelector('#lobby-preview').srcObject === null
  && __preview.getTracks().every(t => t.readyState === 'ended');"""


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit and end visits."""
    server = start_server(tmp_path_factory.mktemp("webkit"))
    yield server
    stop_server(server)


@pytest.fixture
def provider(browser):
    """The provider's visit page in Chromium, on a desktop screen."""
    context = browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "End this visit for everyone?"
    yield page
    context.close()


@pytest.fixture
def patient(webkit):
    """The WebKit window; its logs (Xvfb, WebKitWebDriver) are printed when a test fails."""
    yield webkit
    print(webkit.log_text())  # shown by pytest only for a failed test
    try:
        webkit.driver.get("about:blank")  # the next test starts from no page, camera released
    except Exception as error:  # noqa: BLE001  (a dead driver already failed the test)
        print(f"WebKit did not go to about:blank: {error}")


def state(webkit, test_id: str) -> str | None:
    return webkit.driver.execute_script(
        "const el = document.querySelector(`[data-testid='${arguments[0]}']`);"
        "return el && !el.hidden ? el.dataset.state : null;", test_id)


def text(webkit, test_id: str) -> str:
    return webkit.by_test_id(test_id).text


def stored_device_tests(live_app, appointment_id: int) -> list[str]:
    """The overall grades stored for the visit's device tests (what the EHR is sent)."""
    path = live_app.env["VV_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT overall FROM device_test_results "
                                  "WHERE appointment_id = ? ORDER BY id", (appointment_id,))
        return [overall for (overall,) in rows]


def texted_link(live_app, provider, sandbox_id: str) -> str:
    """The link the patient is texted, from the sandbox schedule's "Patient link (SMS)" (in a
    second tab of the provider's browser: quicker than two `flask` commands)."""
    tab = provider.context.new_page()
    tab.goto(live_app.url + "/sandbox")
    row = tab.locator(f'[data-testid="sandbox-appointment"][data-appointment-id="{sandbox_id}"]')
    row.get_by_test_id("sandbox-patient-link").click()
    link = tab.get_by_test_id("join-link")
    expect(link).to_have_value(re.compile(r"/j/[A-Za-z0-9_-]{43}"))
    url = link.input_value()
    tab.close()
    return url


def run_device_test(webkit) -> dict[str, str]:
    """Start, answer the speaker question, wait for the summary; each check's grade."""
    webkit.by_test_id("device-test-start").click()
    webkit.wait(lambda _: webkit.by_test_id("speaker-yes").is_displayed(), "the speaker question")
    webkit.by_test_id("speaker-yes").click()
    webkit.wait(lambda _: webkit.by_test_id("device-test-summary").get_attribute("data-status")
                in ("pass", "warn", "fail"), "the summary", timeout=45)
    return {name: webkit.by_test_id(f"check-{name}").get_attribute("data-status")
            for name in ("speaker", "microphone", "camera", "connection", "test-call")}


def test_device_test_join_waiting_room_admit_and_end_in_webkit(live_app, provider, patient):
    appointment_id = launch_visit(live_app, provider, "appt-1")
    patient_row = provider.locator('[data-testid="participant"][data-role="patient"]')
    patient.open(texted_link(live_app, provider, "appt-1"))
    assert re.search(r"/join$", patient.driver.current_url), patient.driver.current_url
    assert patient.driver.execute_script("return innerWidth") == 390

    # Told before the waiting room that the call needs another browser (issue 14 item 15).
    patient.wait(lambda _: patient.by_test_id("no-webrtc").is_displayed(), "the no-WebRTC notice")
    assert NO_CALLS in text(patient, "no-webrtc")
    assert serious_violations_webdriver(patient.driver) == []
    patient.screenshot("webkit-join", show="no-webrtc")
    assert patient.errors() == []

    # The device test, from the join page's link.
    patient.by_test_id("device-test-link").click()
    patient.arrive(r"/device-test")
    patient.wait(lambda _: patient.by_test_id("browser-problem").is_displayed(),
                 "the notice that this browser can't make video visits")
    checks = run_device_test(patient)

    # WebKit's mock devices: a tone, and a moving picture.
    assert checks["speaker"] == checks["microphone"] == checks["camera"] == "pass", checks
    assert checks["connection"] in ("pass", "warn"), checks  # no TURN set here
    # A check the visit needs that could not run is never a pass (item 15).
    assert checks["test-call"] == "fail", checks
    assert NO_CALLS in text(patient, "check-test-call")
    assert patient.by_test_id("device-test-summary").get_attribute("data-status") == "fail"
    assert serious_violations_webdriver(patient.driver) == []
    patient.screenshot("webkit-device-test", show="device-test-summary")
    assert patient.errors() == []
    patient.wait(lambda _: stored_device_tests(live_app, appointment_id), "the stored result")
    assert stored_device_tests(live_app, appointment_id) == ["fail"]
    expect(patient_row.get_by_test_id("participant-device-test")).to_have_attribute(
        "data-status", "fail")

    # "Back to your visit", and Join.
    patient.driver.find_element("link text", "Back to your visit").click()
    patient.arrive(r"/join$")
    patient.driver.execute_script(RECORD_STREAMS)
    patient.by_test_id("join-button").click()

    patient.wait(lambda _: state(patient, "lobby") == "waiting", "the waiting room")
    patient.wait(lambda _: "Your provider is here" in text(patient, "lobby-status"),
                 "'Your provider is here' in the waiting room")
    assert NO_CALLS in patient.driver.find_element("id", "lobby-no-webrtc").text  # item 15
    # The mock camera and microphone (the preview may have started before RECORD_STREAMS).
    assert patient.driver.execute_script(KEEP_PREVIEW_STREAM) >= 1
    expect(patient_row).to_have_attribute("data-presence", "connected")
    # The provider sees why there will be no video (item 15).
    expect(patient_row.get_by_test_id("participant-media")).to_have_attribute("data-webrtc",
                                                                              "false")
    assert serious_violations_webdriver(patient.driver) == []
    patient.screenshot("webkit-lobby")

    provider.get_by_test_id("admit").click()

    patient.wait(lambda _: state(patient, "lobby") == "admitted", "the admit")
    # Told which browser to use, and no call is attempted (item 15; before it, both sides
    # waited at "Waiting for the others to connect…" with a ReferenceError).
    patient.wait(lambda _: NO_CALLS in text(patient, "lobby-status"),
                 "the admitted patient told to use another browser")
    assert state(patient, "call") is None
    assert serious_violations_webdriver(patient.driver) == []
    patient.screenshot("webkit-admitted")
    assert patient.errors() == []

    provider.locator("#end-visit").click()

    patient.wait(lambda _: state(patient, "lobby") == "ended", "the end of the visit")
    assert patient.driver.find_element("id", "lobby-title").text == "This visit has ended"
    assert "Thank you. You can close this page." in text(patient, "lobby-status")
    patient.wait(lambda _: patient.driver.execute_script(PREVIEW_RELEASED)
                 and patient.driver.execute_script(f"return ({LIVE_TRACKS})()") == 0,
                 "the camera and microphone released")
    assert serious_violations_webdriver(patient.driver) == []
    patient.screenshot("webkit-ended")
    assert patient.errors() == []
