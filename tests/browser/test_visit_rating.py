"""Issue 14, "a clean end": after the provider ends the visit, the patient may rate it with
one tap (1 to 5), at 360 x 740 and on a desktop, in en, es and pt-BR. Buttons with names a
screen reader reads ("4: good"), a thank-you in a live region, axe clean; the score is
stored (``visit_ratings``), and a second tap replaces it."""
from __future__ import annotations

import sqlite3

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_honest_visit import SCREENS, no_sideways_scroll
from tests.browser.test_provider_visit import launch_visit, patient_token

pytestmark = pytest.mark.browser

QUESTION = {"en-US": "How was your video visit?", "es-MX": "¿Cómo fue su consulta por video?",
            "pt-BR": "Como foi sua consulta por vídeo?"}
GOOD = {"en-US": "4: good", "es-MX": "4: buena", "pt-BR": "4: boa"}
THANKS = {"en-US": "Thank you. Your rating was sent.",
          "es-MX": "Gracias. Su calificación fue enviada.",
          "pt-BR": "Obrigado. Sua avaliação foi enviada."}


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit and end visits."""
    server = start_server(tmp_path_factory.mktemp("visit-rating"))
    yield server
    stop_server(server)


def stored_ratings(live_app, appointment_id: int) -> list[tuple[str, int]]:
    path = live_app.env["VV_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        return connection.execute("SELECT role, score FROM visit_ratings WHERE appointment_id = ?",
                                  (appointment_id,)).fetchall()


@pytest.mark.parametrize(("screen", "locale", "sandbox_id"), [
    ("phone", "en-US", "appt-1"), ("desktop", "es-MX", "appt-2"), ("phone", "pt-BR", "appt-3")])
def test_the_patient_rates_the_visit_with_one_tap_after_it_ends(
        live_app, browser, screen, locale, sandbox_id):
    provider_context = browser.new_context(locale="en-US")
    provider_context.set_default_timeout(15_000)
    provider = provider_context.new_page()
    provider.on("dialog", lambda dialog: dialog.accept())
    appointment_id = launch_visit(live_app, provider, sandbox_id)
    context = browser.new_context(**SCREENS[screen], locale=locale)
    context.set_default_timeout(15_000)
    patient = context.new_page()
    errors: list[str] = []
    patient.on("pageerror", lambda error: errors.append(str(error)))
    patient.goto(f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
    patient.get_by_test_id("join-button").click()
    provider.get_by_test_id("admit").click()
    expect(patient.get_by_test_id("call")).to_have_attribute("data-state", "connected",
                                                             timeout=20_000)
    rating = patient.get_by_test_id("visit-rating")
    expect(rating).to_be_hidden()  # nothing to rate while the visit goes on

    provider.locator("#end-visit").click()

    expect(patient.get_by_test_id("lobby")).to_have_attribute("data-state", "ended")
    expect(rating).to_be_visible()
    group = patient.get_by_role("group", name=QUESTION[locale])
    expect(group.get_by_role("button")).to_have_count(5)
    good = group.get_by_role("button", name=GOOD[locale])
    expect(good).to_have_attribute("aria-pressed", "false")
    no_sideways_scroll(patient)
    assert serious_violations(patient) == []
    row = [patient.get_by_test_id(f"rating-{score}").bounding_box() for score in (1, 5)]
    assert row[0]["y"] == row[1]["y"] and row[0]["height"] >= 44  # one row of big targets

    good.tap() if screen == "phone" else good.click()

    expect(patient.locator("#rating-status")).to_have_text(THANKS[locale])
    expect(good).to_have_attribute("aria-pressed", "true")
    expect(rating).to_have_attribute("data-sent", "4")
    assert stored_ratings(live_app, appointment_id) == [("patient", 4)]
    screenshot(patient, f"visit-rating-{screen}-{locale}")

    patient.get_by_test_id("rating-2").click()

    expect(rating).to_have_attribute("data-sent", "2")
    expect(good).to_have_attribute("aria-pressed", "false")
    assert stored_ratings(live_app, appointment_id) == [("patient", 2)]
    assert serious_violations(patient) == []
    assert errors == []
    context.close()
    provider_context.close()
