"""Issue 14 in real Chromium, on a 360 x 740 phone and on a desktop screen:

- a patient whose browser blocks the camera and microphone is told before joining, in the
  waiting room and in the call ("Your care team can't see or hear you", with the steps for
  their browser); the call's Mute and camera buttons say they are unavailable; the
  provider's page shows the camera and microphone as blocked;
- the waiting room says what is true: the provider has not opened the visit yet, then is
  here; the provider's note; the clinic's phone number once the visit is late (set in the
  admin's endpoint form); Mute and camera off reach the provider; and the refusal pages
  show the clinic's phone.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import (CHROMIUM, CHROMIUM_ARGS, screenshot, start_server,
                                    stop_server)
from tests.browser.test_patient_join_page import ANDROID_CHROME, join_link
from tests.browser.test_provider_visit import launch_visit, patient_token

pytestmark = pytest.mark.browser

SCREENS = {
    "phone": {"viewport": {"width": 360, "height": 740}, "is_mobile": True, "has_touch": True,
              "user_agent": ANDROID_CHROME},
    "desktop": {"viewport": {"width": 1280, "height": 800}},
}
PASSWORD = "correct horse battery"
PHONE = "+1 (312) 555-0100"
# The waiting room's sentences, per language.
NOT_OPENED = {"en-US": "Your provider hasn't opened the visit yet",
              "es-MX": "Su profesional todavía no ha abierto la consulta",
              "pt-BR": "Seu profissional ainda não abriu a consulta"}
HERE = {"en-US": "Your provider is here and will let you in soon.",
        "es-MX": "Su profesional ya está aquí y lo dejará entrar pronto.",
        "pt-BR": "Seu profissional já está aqui e vai deixar você entrar em breve."}
CANT_SEE_OR_HEAR = {"en-US": "Your care team can't see or hear you",
                    "es-MX": "Su equipo de atención no puede verle ni oírle",
                    "pt-BR": "Sua equipe de saúde não consegue ver nem ouvir você"}


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit, call and end visits (one appointment each),
    and set the demo endpoint's clinic phone."""
    server = start_server(tmp_path_factory.mktemp("honest-visit"))
    server.flask("admin", "create-user", "adam", "--role", "admin", "--password", PASSWORD)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def blocking_browser(browser):
    """Chromium whose permission prompts answer "Block" (NotAllowedError), fake devices on."""
    args = [arg for arg in CHROMIUM_ARGS if arg != "--use-fake-ui-for-media-stream"]
    launched = browser.browser_type.launch(executable_path=CHROMIUM,
                                           args=[*args, "--deny-permission-prompts"])
    yield launched
    launched.close()


@pytest.fixture
def provider_page(browser):
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "End this visit for everyone?"
    yield page
    context.close()


def patient_page(browser, screen: str, locale: str):
    context = browser.new_context(**SCREENS[screen], locale=locale)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


def no_sideways_scroll(page):
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the page scrolls sideways"


def participant_media(provider_page):
    return provider_page.locator('[data-testid="participant"][data-role="patient"] '
                                 '[data-testid="participant-media"]')


@pytest.mark.parametrize(("screen", "locale", "sandbox_id"), [
    ("phone", "en-US", "appt-1"), ("desktop", "en-US", "appt-2"),
    ("phone", "es-MX", "appt-3"), ("desktop", "pt-BR", "appt-4")])
def test_blocked_camera_and_microphone_are_told_to_patient_and_provider(
        live_app, blocking_browser, provider_page, screen, locale, sandbox_id):
    appointment_id = launch_visit(live_app, provider_page, sandbox_id)
    context, patient, errors = patient_page(blocking_browser, screen, locale)
    patient.goto(f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")

    patient.get_by_test_id("preview-start").click()

    expect(patient.get_by_test_id("media-problem")).to_have_attribute("data-kind", "denied")
    consequence = patient.get_by_test_id("media-consequence")
    expect(consequence).to_be_visible()
    if locale == "en-US":
        expect(consequence).to_have_text("If you join now, your care team can't see or hear you.")

    patient.get_by_test_id("join-button").click()

    lobby = patient.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "waiting")
    expect(patient.get_by_test_id("lobby-status")).to_have_text(HERE[locale])
    warning = patient.locator("#lobby-media-warning")
    expect(warning).to_be_visible()
    expect(warning).to_have_attribute("data-camera", "blocked")
    expect(warning).to_have_attribute("data-microphone", "blocked")
    expect(warning).to_have_attribute("data-browser",
                                      "chrome_android" if screen == "phone" else "chrome")
    expect(warning).to_contain_text(CANT_SEE_OR_HEAR[locale])
    expect(warning.get_by_test_id("media-warning-help")).to_be_visible()
    # Every browser's steps are one tap away, whatever the user agent says.
    warning.locator("summary").click()
    for browser_name in ("Safari", "iPhone", "Firefox", "Edge", "Android"):
        expect(warning.locator("dl")).to_contain_text(browser_name)
    badge = participant_media(provider_page)
    expect(badge).to_have_attribute("data-camera", "blocked")
    expect(badge).to_have_attribute("data-microphone", "blocked")
    expect(badge).to_contain_text("Camera blocked")
    no_sideways_scroll(patient)
    assert serious_violations(patient) == []
    screenshot(patient, f"issue14-blocked-lobby-{screen}-{locale}")

    # Still blocked: Try again keeps the warning (and does not throw).
    warning.get_by_test_id("media-retry").click()
    expect(warning).to_have_attribute("data-camera", "blocked")

    provider_page.get_by_test_id("admit").click()

    call = patient.get_by_test_id("call")
    expect(call).to_have_attribute("data-state", "connected", timeout=15_000)
    in_call = patient.locator("#call-media-warning")
    expect(in_call).to_be_visible()
    expect(in_call).to_contain_text(CANT_SEE_OR_HEAR[locale])
    for button in (".toggle-mic", ".toggle-camera"):
        expect(call.locator(button)).to_be_disabled()
        expect(call.locator(button)).to_have_attribute("data-available", "false")
    if locale == "en-US":
        expect(call.locator(".toggle-mic")).to_have_text("Microphone unavailable")
        expect(call.locator(".toggle-camera")).to_have_text("Camera unavailable")
    no_sideways_scroll(patient)
    assert serious_violations(patient) == []
    screenshot(patient, f"issue14-blocked-call-{screen}-{locale}")
    # The provider's call has a tile for them, saying why it is empty.
    expect(provider_page.locator("#call .tile.no-media")).to_have_text("No camera or microphone")
    assert serious_violations(provider_page) == []
    screenshot(provider_page, f"issue14-provider-sees-blocked-{screen}-{locale}")

    provider_page.locator("#end-visit").click()

    expect(lobby).to_have_attribute("data-state", "ended")
    expect(patient.locator("#lobby-media-warning")).to_be_hidden()
    assert errors == []
    context.close()


def set_clinic_phone(browser, live_app, phone: str) -> None:
    """Through the admin's endpoint form, as a clinic's admin would."""
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(live_app.url + "/admin/login")
    page.get_by_label("Username").fill("adam")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(live_app.url + "/admin/")
    page.goto(live_app.url + "/admin/endpoints/sandbox")
    page.get_by_label("Clinic phone").fill(phone)
    page.get_by_test_id("endpoint-save").click()
    # The second test finds it already set.
    expect(page.locator("body")).to_contain_text(re.compile("Saved: Clinic phone|Nothing changed"))
    expect(page.get_by_label("Clinic phone")).to_have_value(phone)
    context.close()


@pytest.mark.parametrize(("screen", "locale", "sandbox_id"), [
    ("phone", "en-US", "appt-5"), ("desktop", "es-MX", "appt-6")])
def test_the_waiting_room_says_what_is_true_and_when_to_call_the_clinic(
        live_app, browser, provider_page, screen, locale, sandbox_id):
    set_clinic_phone(browser, live_app, PHONE)
    # Started 15 minutes ago: past the default 10 minutes, and no provider page is open.
    link = join_link(live_app, sandbox_id, datetime.now(timezone.utc) - timedelta(minutes=15))
    context, patient, errors = patient_page(browser, screen, locale)
    patient.goto(link)

    patient.get_by_test_id("join-button").click()

    lobby = patient.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "waiting")
    expect(patient.get_by_test_id("lobby-status")).to_contain_text(NOT_OPENED[locale])
    late = patient.get_by_test_id("lobby-call-clinic")
    expect(late).to_be_visible()
    phone_link = late.get_by_role("link", name=PHONE)
    expect(phone_link).to_have_attribute("href", "tel:+13125550100")
    expect(patient.locator("#lobby-media-warning")).to_be_hidden()
    no_sideways_scroll(patient)
    assert serious_violations(patient) == []
    screenshot(patient, f"issue14-lobby-late-{screen}-{locale}")

    appointment_id = launch_visit(live_app, provider_page, sandbox_id)

    expect(patient.get_by_test_id("lobby-status")).to_have_text(HERE[locale])
    badge = participant_media(provider_page)
    expect(badge).to_have_attribute("data-camera", "on")
    expect(badge).to_have_attribute("data-microphone", "on")
    provider_page.locator("#note-text").fill("Running 5 minutes late")
    provider_page.get_by_role("button", name="Show note").click()
    expect(patient.get_by_test_id("lobby-note")).to_contain_text("Running 5 minutes late")
    assert serious_violations(patient) == []

    provider_page.get_by_test_id("admit").click()
    call = patient.get_by_test_id("call")
    expect(call).to_have_attribute("data-state", "connected", timeout=15_000)
    expect(patient.locator("#call-media-warning")).to_be_hidden()
    call.locator(".toggle-mic").click()
    expect(badge).to_have_attribute("data-microphone", "muted")
    call.locator(".toggle-camera").click()
    expect(badge).to_have_attribute("data-camera", "off")
    expect(badge).to_contain_text("Camera off")
    expect(badge).to_contain_text("Muted")
    provider_page.locator("#end-visit").click()
    expect(lobby).to_have_attribute("data-state", "ended")

    # The link again, the visit over: the page says so, with the clinic's phone.
    patient.goto(link)

    problem = patient.get_by_test_id("join-problem")
    expect(problem).to_have_attribute("data-reason", "visit_ended")
    expect(patient.get_by_test_id("clinic-phone").get_by_role("link", name=PHONE)).to_be_visible()
    assert serious_violations(patient) == []
    screenshot(patient, f"issue14-ended-phone-{screen}-{locale}")
    # A wrong link: this install has one clinic phone, so it is known.
    patient.goto(f"{live_app.url}/j/not-a-real-link")
    expect(patient.get_by_test_id("join-problem")).to_have_attribute("data-reason",
                                                                     "unknown_link")
    expect(patient.get_by_test_id("clinic-phone")).to_contain_text(PHONE)
    assert serious_violations(patient) == []
    assert errors == []
    assert appointment_id > 0
    context.close()
