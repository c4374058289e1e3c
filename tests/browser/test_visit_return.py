"""Leaving and coming back, and the end of a visit, in real Chromium on a 360 x 740 phone and
on a desktop screen: Rejoin after "Leave call", a reload in the waiting room or the call
that lands back there without a tap, a clean end (camera and microphone released, no
timer, no console errors), and the provider's side of admitting (into the call at once,
the live region cleared, no "Live" next to an ended visit, a wait timed from this entry)."""
from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_provider_visit import launch_visit, patient_token
from tests.browser.test_video_visit import expect_in_call, join_from_link

pytestmark = pytest.mark.browser

SCREENS = {
    "phone": {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}
# Every camera and microphone stream the page opens, so a test can tell they were released.
RECORD_STREAMS = """(() => {
  window.__streams = [];
  const original = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    window.__streams.push(stream);
    return stream;
  };
})();"""
LIVE_TRACKS = """() => window.__streams.flatMap(s => s.getTracks())
  .filter(t => t.readyState === 'live').length"""


RELOAD_GRACE_SECONDS = 5


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit, call and end visits (one appointment each).
    Reloads must come back within the grace period, and a reload on a loaded machine can
    take seconds: the grace is the product's default here, not the other tests' 0.3 s."""
    server = start_server(tmp_path_factory.mktemp("visit-return"),
                          VV_PRESENCE_GRACE_SECONDS=str(RELOAD_GRACE_SECONDS))
    yield server
    stop_server(server)


class Screen:
    """A browser context of one screen size, with the console errors its pages log."""

    def __init__(self, browser, screen: str, locale: str = "en-US"):
        self.context = browser.new_context(**SCREENS[screen], locale=locale)
        self.context.set_default_timeout(10_000)
        self.errors: list[str] = []

    def page(self):
        page = self.context.new_page()
        page.add_init_script(RECORD_STREAMS)
        page.on("console", lambda message: message.type == "error"
                and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept())  # "End this visit for everyone?"
        return page


@pytest.fixture(params=list(SCREENS))
def screens(request, browser):
    """(patient's screen, provider's screen), both of the parametrized size."""
    made = [Screen(browser, request.param), Screen(browser, request.param)]
    yield request.param, made[0], made[1]
    for screen in made:
        screen.context.close()


def admitted_into_call(patient, provider):
    """The provider admits the patient: both end up in the call (the provider without
    pressing Join call)."""
    provider.get_by_test_id("admit").click()
    expect_in_call(patient)
    expect_in_call(provider)


def instant(iso: str) -> datetime:
    at = datetime.fromisoformat(iso)
    return at if at.tzinfo else at.replace(tzinfo=timezone.utc)


def appointment_for(screen: str, first: str, second: str) -> str:
    return first if screen == "phone" else second


def test_leave_then_rejoin_then_a_clean_end(live_app, screens):
    screen, patient_screen, provider_screen = screens
    provider = provider_screen.page()
    appointment_id = launch_visit(live_app, provider, appointment_for(screen, "appt-1", "appt-2"))
    patient = patient_screen.page()
    join_from_link(patient, f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
    admitted_into_call(patient, provider)
    call = patient.get_by_test_id("call")

    patient.locator(".leave-call").click()

    expect(call).to_have_attribute("data-state", "ended")
    expect(patient.locator("#call-status")).to_have_text("You left the call.")
    rejoin = patient.get_by_test_id("rejoin")
    expect(rejoin).to_be_visible()
    patient.wait_for_function(f"() => ({LIVE_TRACKS})() === 0")  # camera and mic released
    expect(provider.get_by_test_id("remote-video")).to_have_count(0)
    assert serious_violations(patient) == []
    screenshot(patient, f"patient-left-call-{screen}")

    rejoin.click()

    expect_in_call(patient)
    expect_in_call(provider)
    expect(rejoin).to_be_hidden()
    assert patient.evaluate(LIVE_TRACKS) >= 1

    provider.locator("#end-visit").click()

    lobby = patient.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "ended")
    expect(call).to_have_attribute("data-state", "ended")
    expect(lobby.locator("#lobby-title")).to_have_text("This visit has ended")
    expect(call).to_be_hidden()  # the waiting room card says it, once
    expect(lobby.locator(".lobby-waited")).to_be_hidden()
    expect(patient.locator("#mic-level")).to_be_hidden()
    expect(patient.locator("#lobby-preview")).to_be_hidden()
    expect(rejoin).to_be_hidden()
    patient.wait_for_function(f"() => ({LIVE_TRACKS})() === 0")
    assert patient.evaluate("document.querySelector('#call .self video').srcObject") is None
    assert serious_violations(patient) == []
    screenshot(patient, f"patient-visit-ended-{screen}")
    assert patient_screen.errors == []
    assert provider_screen.errors == []


def test_reload_in_the_lobby_and_in_the_call_comes_back_without_a_tap(live_app, screens):
    screen, patient_screen, provider_screen = screens
    provider = provider_screen.page()
    appointment_id = launch_visit(live_app, provider, appointment_for(screen, "appt-3", "appt-4"))
    patient = patient_screen.page()
    lobby = join_from_link(patient,
                           f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
    waited = provider.locator(".waited")
    expect(waited).to_have_count(1)
    entered = waited.get_attribute("data-entered-at")

    patient.reload()

    expect(lobby).to_be_visible()
    expect(lobby).to_have_attribute("data-state", "waiting")
    expect(patient.locator("#prejoin")).to_be_hidden()
    expect(provider.get_by_test_id("admit")).to_have_count(1)
    assert waited.get_attribute("data-entered-at") == entered  # the same place in line
    admitted_into_call(patient, provider)

    patient.reload()

    expect_in_call(patient)
    expect_in_call(provider)
    patient.locator(".leave-call").click()
    expect(patient.get_by_test_id("rejoin")).to_be_visible()

    patient.reload()  # left the call, then reloaded: still out, Rejoin offered

    expect(patient.get_by_test_id("rejoin")).to_be_visible()
    expect(patient.get_by_test_id("call")).to_have_attribute("data-state", "ended")
    assert patient.evaluate(LIVE_TRACKS) == 0
    patient.get_by_test_id("rejoin").click()
    expect_in_call(patient)
    assert patient_screen.errors == []


def test_admit_brings_the_provider_in_and_an_ended_visit_is_not_live(live_app, screens):
    screen, patient_screen, provider_screen = screens
    provider = provider_screen.page()
    appointment_id = launch_visit(live_app, provider, appointment_for(screen, "appt-5", "appt-6"))
    token = patient_token(live_app, appointment_id)
    link = f"{live_app.url}/j/{token}"
    first = patient_screen.page()
    join_from_link(first, link)
    waited = provider.locator(".waited")
    expect(waited).to_have_text(re.compile(r"waiting 0:0[2-9]"))  # a wait of a few seconds
    entered = waited.get_attribute("data-entered-at")
    first.close()  # gone for good once the grace period is over
    patient_row = provider.locator('[data-testid="participant"][data-role="patient"]')
    expect(patient_row).to_have_attribute("data-presence", "disconnected",
                                          timeout=(RELOAD_GRACE_SECONDS + 15) * 1000)

    patient = patient_screen.page()
    join_from_link(patient, link)

    expect(waited).to_have_count(1)
    assert instant(waited.get_attribute("data-entered-at")) > instant(entered)  # this wait
    expect(waited).to_have_text(re.compile(r"waiting 0:0[0-2]"))
    expect(provider.locator("#announcer")).to_contain_text("is waiting in the lobby")

    provider.get_by_test_id("admit").click()

    expect_in_call(provider)  # without pressing Join call
    expect_in_call(patient)
    expect(provider.locator("#announcer")).to_have_text("")
    expect(provider.locator("#join-call")).to_be_disabled()
    assert serious_violations(provider) == []
    screenshot(provider, f"provider-admitted-in-call-{screen}")

    provider.locator("#end-visit").click()

    expect(provider.locator("#ended-banner")).to_be_visible()
    expect(provider.locator("#connection-text")).to_be_hidden()
    provider.reload()  # the visit page of an ended visit, opened again
    expect(provider.locator("#ended-banner")).to_be_visible()
    expect(provider.get_by_text("Live", exact=True)).to_be_hidden()
    expect(provider.locator("#connection-text")).to_be_hidden()
    assert serious_violations(provider) == []
    screenshot(provider, f"provider-visit-ended-{screen}")
    assert provider_screen.errors == []
    assert patient_screen.errors == []
