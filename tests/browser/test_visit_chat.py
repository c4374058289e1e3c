"""Chat in the visit in real Chromium, the patient at 360 x 740 or on a desktop: a
provider's message reaches the waiting room, people in the call write to each other,
text stays text, the provider downloads a transcript, and the end clears the patient's."""
from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_provider_visit import launch_visit, patient_token
from tests.browser.test_video_visit import expect_in_call, join_from_link
from tests.browser.test_visit_return import SCREENS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit patients and end visits."""
    server = start_server(tmp_path_factory.mktemp("visit-chat"))
    yield server
    stop_server(server)


def new_page(browser, screen, errors):
    context = browser.new_context(**SCREENS[screen], locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("dialog", lambda dialog: dialog.accept())  # "End this visit for everyone?"
    return context, page


def send(page, text):
    page.get_by_label("Message", exact=True).fill(text)
    page.get_by_test_id("chat-send").click()


@pytest.mark.parametrize(("screen", "sandbox_id"), [("phone", "appt-1"), ("desktop", "appt-2")])
def test_chat_from_the_lobby_to_the_call_with_a_transcript(live_app, browser, screen,
                                                           sandbox_id):
    errors: list[str] = []
    provider_context, provider = new_page(browser, "desktop", errors)
    appointment_id = launch_visit(live_app, provider, sandbox_id)
    patient_context, patient = new_page(browser, screen, errors)
    join_from_link(patient, f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
    patient_chat = patient.get_by_test_id("chat")
    expect(patient_chat).to_be_hidden()  # nothing to read yet
    expect(provider.get_by_test_id("chat-notice")).to_contain_text(
        "not part of the medical record")

    send(provider, "Running 10 minutes late <b>sorry</b>")

    expect(patient_chat).to_be_visible()
    message = patient.get_by_test_id("chat-message")
    expect(message).to_have_count(1)
    expect(message).to_contain_text("Running 10 minutes late <b>sorry</b>")  # text, not markup
    assert patient.locator("#chat-log b").count() == 0
    expect(patient.get_by_test_id("chat-input")).to_be_hidden()  # waiting: read only
    log = patient.get_by_role("log", name="Messages")
    expect(log).to_have_attribute("aria-live", "polite")
    assert serious_violations(patient) == []

    provider.get_by_test_id("admit").click()
    expect_in_call(patient)
    expect(patient.get_by_test_id("chat-input")).to_be_enabled()
    send(patient, "Hello doctor, I can see you")

    expect(provider.get_by_test_id("chat-message")).to_have_count(2)
    expect(provider.get_by_test_id("chat-message").last).to_contain_text("Hello doctor")
    expect(patient.get_by_test_id("chat-message").last).to_contain_text("You")
    expect(patient.get_by_test_id("chat-input")).to_have_value("")
    box = patient.get_by_test_id("chat-send").bounding_box()
    assert box["x"] + box["width"] <= SCREENS[screen]["viewport"]["width"]
    assert patient.evaluate("document.documentElement.scrollWidth "
                            "<= document.documentElement.clientWidth")
    assert serious_violations(patient) == []
    assert serious_violations(provider) == []
    screenshot(patient, f"visit-chat-patient-{screen}")
    screenshot(provider, f"visit-chat-provider-{screen}")

    with provider.expect_download() as download:
        provider.get_by_test_id("chat-transcript").click()
    transcript = Path(download.value.path()).read_text(encoding="utf-8")
    assert "Not part of the medical record." in transcript
    assert "Running 10 minutes late <b>sorry</b>" in transcript
    assert "Hello doctor, I can see you" in transcript
    assert patient.get_by_test_id("chat-transcript").is_hidden()  # the provider's only

    provider.locator("#end-visit").click()

    expect(patient.get_by_test_id("lobby")).to_have_attribute("data-state", "ended")
    expect(patient_chat).to_be_hidden()
    expect(patient.get_by_test_id("chat-message")).to_have_count(0)
    expect(provider.get_by_test_id("chat-input")).to_be_disabled()
    expect(provider.get_by_test_id("chat-transcript")).to_be_visible()  # what the page has
    assert errors == []
    patient_context.close()
    provider_context.close()


def test_the_chat_speaks_the_patients_language(live_app, browser):
    errors: list[str] = []
    provider_context, provider = new_page(browser, "desktop", errors)
    appointment_id = launch_visit(live_app, provider, "appt-3")
    context = browser.new_context(**SCREENS["phone"], locale="es-MX")
    context.set_default_timeout(10_000)
    patient = context.new_page()
    join_from_link(patient, f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")

    send(provider, "Hola")

    expect(patient.get_by_test_id("chat")).to_be_visible()
    expect(patient.get_by_test_id("chat-notice")).to_contain_text(
        "El chat no forma parte de la historia clínica")
    assert serious_violations(patient) == []
    provider.get_by_test_id("admit").click()
    expect_in_call(patient)
    expect(patient.get_by_test_id("chat-send")).to_have_text("Enviar")
    # Longer words than English, at 360 px: the field and Send still fit side by side.
    assert patient.evaluate("document.documentElement.scrollWidth "
                            "<= document.documentElement.clientWidth")
    assert serious_violations(patient) == []
    context.close()
    provider_context.close()
