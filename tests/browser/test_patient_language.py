"""The patient's language on a 360 x 740 phone and on a desktop screen: the join page's
"in your own time zone" sentence reads naturally in Spanish and Portuguese (singular and
plural hours), and a texted link opens in the language of the text, with the switch."""
from __future__ import annotations

from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import reschedule, screenshot, start_server, stop_server
from tests.browser.test_patient_join_page import join_link
from tests.browser.test_sandbox_sms import _send_from_schedule, _soon_today
from tests.browser.test_visit_return import SCREENS

pytestmark = pytest.mark.browser

NEW_YORK = ZoneInfo("America/New_York")  # the patient; the sandbox clinic is in Chicago
DAYS = {"es": ["lunes", "martes", "miércoles", "jueves", "viernes", "sábado", "domingo"],
        "pt_BR": ["segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira",
                  "sábado", "domingo"]}
# (language, hour in New York) -> the sentence up to the zone's name.
SENTENCES = {
    ("es", 22): "Donde usted está, son las 22:30 del {day} (",
    ("es", 1): "Donde usted está, es la 1:30 del {day} (",
    ("pt_BR", 22): "Onde você está, são 22:30 de {day} (",
    ("pt_BR", 1): "Onde você está, é 1:30 de {day} (",
}


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("patient-language"))
    yield server
    stop_server(server)


@pytest.fixture(params=list(SCREENS))
def screen(request, browser):
    """(screen name, a context of that size in New York with an English browser)."""
    context = browser.new_context(**SCREENS[request.param], locale="en-US",
                                  timezone_id="America/New_York")
    context.set_default_timeout(10_000)
    yield request.param, context
    context.close()


def next_new_york(hour: int) -> datetime:
    """The next HH:30 on New York's clock, at least an hour ahead."""
    now = datetime.now(NEW_YORK)
    at = datetime.combine(now.date(), time(hour, 30), tzinfo=NEW_YORK)
    while at < now + timedelta(hours=1):
        at = datetime.combine(at.date() + timedelta(days=1), time(hour, 30), tzinfo=NEW_YORK)
    return at


@pytest.mark.parametrize("lang", ["es", "pt_BR"])
def test_the_local_time_sentence_reads_naturally(live_app, screen, lang):
    name, context = screen
    page = context.new_page()
    for hour in (22, 1):
        start = next_new_york(hour)
        page.goto(join_link(live_app, "appt-5", start.astimezone(timezone.utc)))
        page.get_by_test_id("join-button").wait_for()

        page.goto(f"{live_app.url}/join?lang={lang}")

        expected = SENTENCES[(lang, hour)].format(day=DAYS[lang][start.weekday()])
        expect(page.get_by_test_id("local-time")).to_contain_text(expected)
    assert serious_violations(page) == []
    screenshot(page, f"patient-local-time-{lang}-{name}")


@pytest.mark.parametrize(("sandbox_id", "lang", "html_lang", "title"), [
    ("appt-2", "es", "es", "Su videoconsulta"),
    ("appt-4", "pt-BR", "pt-BR", "Sua consulta por vídeo")])
def test_a_texted_link_opens_in_the_language_of_the_text(live_app, screen, page, sandbox_id,
                                                         lang, html_lang, title):
    name, context = screen
    reschedule(live_app, sandbox_id, _soon_today(), minutes=30)
    _send_from_schedule(page, live_app, sandbox_id)
    texted = page.locator('[data-testid="sandbox-sms"]').get_by_role("link").last
    link = texted.get_attribute("href")
    assert link.endswith(f"?lang={lang}")
    patient = context.new_page()  # an English browser

    patient.goto(link)

    expect(patient.locator("html")).to_have_attribute("lang", html_lang)
    expect(patient.locator("h1").first).to_have_text(title)
    switch = patient.get_by_role("navigation").get_by_role("link", name="English")
    expect(switch).to_be_visible()
    assert serious_violations(patient) == []
    screenshot(patient, f"patient-texted-link-{html_lang}-{name}")
    # The switcher is rendered once per language: each page marks its own language.
    languages = patient.get_by_role("navigation")
    expect(languages.locator("[aria-current=true]")).to_have_text(
        {"es": "Español", "pt-BR": "Português (Brasil)"}[html_lang])
    switch.click()
    expect(patient.locator("h1").first).to_have_text("Your video visit")
    expect(languages.locator("[aria-current=true]")).to_have_text("English")
