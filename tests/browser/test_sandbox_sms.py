"""The sandbox's "Send appointment message" in a real browser: the EHR sends a signed
SIU^S12, the app texts the patient, and the text's join link opens the join page."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import reschedule, screenshot
from tests.browser.test_provider_visit import launch_visit

pytestmark = pytest.mark.browser

CLINIC = ZoneInfo("America/Chicago")


def _soon_today() -> datetime:
    """A start 20 minutes ahead, kept on today's clinic schedule (late evening clamps)."""
    now = datetime.now(CLINIC)
    start = now + timedelta(minutes=20)
    if start.date() != now.date():
        start = now.replace(hour=23, minute=59, second=0, microsecond=0)
    return start


def _send_from_schedule(page, live_app, appointment_id: str):
    page.goto(live_app.url + "/sandbox")
    row = page.locator(f'[data-testid="sandbox-appointment"][data-appointment-id="{appointment_id}"]')
    row.get_by_role("button", name="Send appointment message").click()
    result = page.get_by_role("status")
    result.wait_for()
    return result


def test_send_appointment_message_texts_a_working_join_link(live_app, page):
    reschedule(live_app, "appt-3", _soon_today(), minutes=30)

    result = _send_from_schedule(page, live_app, "appt-3")

    assert result.get_attribute("data-ack-code") == "AA"
    assert "accepted" in result.inner_text()
    confirmation = page.locator('[data-testid="sandbox-sms"][data-kind="confirmation"]')
    confirmation.wait_for()
    assert page.get_by_role("heading", name="Messages sent to patient").is_visible()
    link = confirmation.get_by_role("link")
    assert link.get_attribute("href").startswith(live_app.url + "/j/")
    assert serious_violations(page) == []
    screenshot(page, "sandbox-appointment-message")

    link.click()

    page.get_by_test_id("join-button").wait_for(state="visible")
    assert page.url == live_app.url + "/join"  # the link's token is gone from the address


def test_appointment_message_page_fits_a_phone(live_app, browser):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True,
                                  has_touch=True, locale="en-US")
    context.set_default_timeout(10_000)
    phone = context.new_page()
    try:
        reschedule(live_app, "appt-3", _soon_today(), minutes=30)

        result = _send_from_schedule(phone, live_app, "appt-3")

        assert result.get_attribute("data-ack-code") == "AA"
        overflow = phone.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, "the message page scrolls sideways on a 360 px phone"
        assert serious_violations(phone) == []
        screenshot(phone, "sandbox-appointment-message-phone")
    finally:
        context.close()


def test_texted_patient_waits_in_the_visit_the_provider_launched(live_app, page, browser):
    # The demo's whole path: the EHR books (HL7), the patient taps the texted link, the
    # provider starts the visit from the EHR (SMART launch) and sees that patient waiting.
    reschedule(live_app, "appt-3", datetime.now(CLINIC), minutes=30)
    _send_from_schedule(page, live_app, "appt-3")
    texts = page.locator('[data-testid="sandbox-sms"]').get_by_role("link")
    texted_link = texts.last.get_attribute("href")
    appointment_id = launch_visit(live_app, page, "appt-3")
    patient_context = browser.new_context(viewport={"width": 360, "height": 740},
                                          locale="en-US")
    patient_context.set_default_timeout(10_000)
    patient = patient_context.new_page()
    try:
        patient.goto(texted_link)
        patient.get_by_test_id("join-button").click()
        expect(patient.get_by_test_id("lobby")).to_have_attribute("data-state", "waiting")

        patients = page.locator('[data-testid="participant"][data-role="patient"]')
        expect(patients.first).to_have_attribute("data-presence", "connected")
        assert patients.count() == 1, "the texted patient and the launch's patient are one"
        assert page.url.endswith(f"/visit/{appointment_id}")
    finally:
        patient_context.close()
