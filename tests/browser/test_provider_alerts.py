"""The provider's arrival alerts: on after the first click anywhere on the page (browsers
play sound only after one), with a visible on/off state the provider can change; inside
an EHR frame, a banner that stays until someone acts on it. Sound and notifications are
observed through an init script that counts oscillators started, <audio> played and
Notifications shown (and grants the notification permission when asked)."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_provider_visit import PatientSocket, launch_visit, patient_token

pytestmark = pytest.mark.browser

SCREENS = {"phone": {"viewport": {"width": 360, "height": 740}, "is_mobile": True,
                     "has_touch": True},
           "desktop": {"viewport": {"width": 1366, "height": 768}}}
COUNT_ALERTS = """
window.__alerts = { sounds: 0, notifications: [], asked: 0 };
const startOscillator = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  window.__alerts.sounds += 1;
  return startOscillator.apply(this, args);
};
const play = HTMLMediaElement.prototype.play;
HTMLMediaElement.prototype.play = function (...args) {
  if (this instanceof HTMLAudioElement) window.__alerts.sounds += 1;
  return play.apply(this, args);
};
class CountedNotification {
  static permission = "default";
  static requestPermission() {
    window.__alerts.asked += 1;
    CountedNotification.permission = "granted";
    return Promise.resolve("granted");
  }
  constructor(title, options = {}) { window.__alerts.notifications.push({ title, body: options.body }); }
}
window.Notification = CountedNotification;
"""


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests launch visits and bring patients into them."""
    server = start_server(tmp_path_factory.mktemp("provider-alerts"))
    yield server
    stop_server(server)


def provider_page(browser, screen):
    context = browser.new_context(**SCREENS[screen], locale="en-US")
    context.set_default_timeout(10_000)
    context.add_init_script(COUNT_ALERTS)
    return context, context.new_page()


def alerts(frame):
    return frame.evaluate("() => ({ sounds: window.__alerts.sounds, asked: window.__alerts.asked, "
                          "notifications: window.__alerts.notifications.length })")


@pytest.mark.parametrize(("screen", "sandbox_id"), [("phone", "appt-1"), ("desktop", "appt-2")])
def test_alerts_turn_on_with_the_first_click_and_sound_when_a_patient_arrives(
        live_app, browser, screen, sandbox_id):
    context, page = provider_page(browser, screen)
    appointment_id = launch_visit(live_app, page, sandbox_id)
    toggle = page.get_by_test_id("alerts-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(toggle).to_contain_text("Off")

    page.locator("#people-title").click()  # anywhere: a heading

    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(toggle).to_contain_text("On")
    assert alerts(page)["asked"] == 1  # the desktop permission, asked in that click
    page.evaluate("() => { document.hasFocus = () => false; }")  # the provider looks elsewhere
    patient = PatientSocket(live_app.url, patient_token(live_app, appointment_id))
    expect(page.get_by_test_id("admit")).to_be_visible()
    page.wait_for_function("() => window.__alerts.sounds > 0 && window.__alerts.notifications.length === 1")
    assert page.get_by_test_id("arrival-banner").is_hidden()  # not in a frame: the title counts
    assert serious_violations(page) == []
    screenshot(page, f"provider-alerts-on-{screen}")

    toggle.click()
    expect(toggle).to_have_attribute("aria-pressed", "false")
    expect(toggle).to_contain_text("Off")
    heard = alerts(page)
    patient.client.disconnect()
    expect(page.get_by_test_id("admit")).to_have_count(0)
    again = PatientSocket(live_app.url, patient_token(live_app, appointment_id))
    expect(page.get_by_test_id("admit")).to_be_visible()

    assert alerts(page) == heard  # off: no sound, no notification
    page.reload()
    page.locator("#people-title").click()
    expect(toggle).to_have_attribute("aria-pressed", "false")  # the choice is remembered
    again.client.disconnect()
    context.close()


def test_in_an_ehr_frame_an_arrival_banner_stays_until_someone_acts(live_app, browser):
    context, page = provider_page(browser, "desktop")
    appointment_id = launch_visit(live_app, page, "appt-3")
    # The EHR's page, on our origin (the visit page may be framed by its own origin).
    page.route(live_app.url + "/ehr-frame", lambda route: route.fulfill(
        content_type="text/html",
        body=f'<!doctype html><title>EHR</title><iframe title="Video visit" '
             f'src="/visit/{appointment_id}" style="width:900px;height:700px"></iframe>'))
    page.goto(live_app.url + "/ehr-frame")
    frame = page.frame_locator("iframe")
    expect(frame.get_by_test_id("alerts-toggle")).to_be_visible()
    banner = frame.get_by_test_id("arrival-banner")

    patient = PatientSocket(live_app.url, patient_token(live_app, appointment_id))

    expect(banner).to_be_visible()
    expect(banner).to_contain_text("is waiting in the lobby")
    frame.locator("#note-title").click()  # a click elsewhere is not acting on it
    expect(frame.get_by_test_id("alerts-toggle")).to_have_attribute("aria-pressed", "true")
    expect(banner).to_be_visible()
    frame.get_by_role("button", name="OK").click()
    expect(banner).to_be_hidden()

    patient.client.disconnect()
    expect(frame.get_by_test_id("admit")).to_have_count(0)
    again = PatientSocket(live_app.url, patient_token(live_app, appointment_id))
    expect(banner).to_be_visible()
    frame.get_by_test_id("admit").click()
    expect(banner).to_be_hidden()
    assert again.admitted.wait(10)
    again.client.disconnect()
    patient.client.disconnect()
    context.close()
