"""Edges of a patient's visit on a 360 x 740 phone and on a desktop screen: a reload straight
back into the call in a browser that plays sound only after a tap on the page (Safari on
iPhone; emulated here, since Chromium lets a same-site reload keep the earlier tap), and a
visit ended while the patient is still in the waiting room."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import start_server, stop_server
from tests.browser.test_provider_visit import launch_visit, patient_token
from tests.browser.test_video_visit import expect_in_call, join_from_link
from tests.browser.test_visit_return import LIVE_TRACKS, SCREENS, Screen

pytestmark = pytest.mark.browser

REMOTE_MUTED = "() => document.querySelector('[data-testid=remote-video]').muted"


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    # A reload must come back within the grace period, which takes seconds on a loaded
    # machine: the product's default, not the other tests' 0.3 s.
    server = start_server(tmp_path_factory.mktemp("call-sound"), VV_PRESENCE_GRACE_SECONDS="5")
    yield server
    stop_server(server)


# Safari's rule: play() with sound is refused until the page has had a tap.
NEEDS_A_TAP = """(() => {
  let tapped = false;
  for (const type of ["pointerdown", "click", "keydown"]) {
    addEventListener(type, () => { tapped = true; }, true);
  }
  const play = HTMLMediaElement.prototype.play;
  HTMLMediaElement.prototype.play = function () {
    if (!this.muted && !tapped) {
      return Promise.reject(new DOMException("needs a tap", "NotAllowedError"));
    }
    return play.call(this);
  };
})();"""


@pytest.mark.parametrize(("screen", "sandbox_id"), [("phone", "appt-1"), ("desktop", "appt-2")])
def test_reload_into_the_call_plays_muted_and_one_tap_turns_the_sound_on(
        live_app, browser, screen, sandbox_id):
    provider_context = browser.new_context(**SCREENS["desktop"], locale="en-US")
    patient_context = browser.new_context(**SCREENS[screen], locale="en-US")
    patient_context.add_init_script(NEEDS_A_TAP)
    for context in (provider_context, patient_context):
        context.set_default_timeout(10_000)
    try:
        provider = provider_context.new_page()
        appointment_id = launch_visit(live_app, provider, sandbox_id)
        patient = patient_context.new_page()
        join_from_link(patient, f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
        provider.get_by_test_id("admit").click()
        expect_in_call(patient)

        patient.reload()  # no tap on the new page

        expect_in_call(patient)  # the picture plays
        sound = patient.get_by_role("button", name="Turn on the sound")
        expect(sound).to_be_visible()
        assert patient.evaluate(REMOTE_MUTED) is True
        assert serious_violations(patient) == []
        sound.click()
        expect(sound).to_be_hidden()
        patient.wait_for_function(f"() => !({REMOTE_MUTED})()")
    finally:
        patient_context.close()
        provider_context.close()


@pytest.mark.parametrize(("screen", "sandbox_id"), [("phone", "appt-3"), ("desktop", "appt-4")])
def test_a_visit_ended_in_the_waiting_room_lets_go_of_camera_and_timer(live_app, browser,
                                                                        screen, sandbox_id):
    provider_screen, patient_screen = Screen(browser, "desktop"), Screen(browser, screen)
    try:
        provider = provider_screen.page()
        appointment_id = launch_visit(live_app, provider, sandbox_id)
        patient = patient_screen.page()
        lobby = join_from_link(patient,
                               f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
        expect(lobby.locator(".lobby-waited")).to_be_visible()
        assert patient.evaluate(LIVE_TRACKS) >= 1

        provider.locator("#end-visit").click()

        expect(lobby).to_have_attribute("data-state", "ended")
        expect(lobby.locator(".lobby-waited")).to_be_hidden()
        expect(patient.locator("#mic-level")).to_be_hidden()
        patient.wait_for_function(f"() => ({LIVE_TRACKS})() === 0")
        assert patient.evaluate("document.querySelector('#lobby-preview').srcObject") is None
        assert serious_violations(patient) == []
        assert patient_screen.errors == []
    finally:
        patient_screen.context.close()
        provider_screen.context.close()
