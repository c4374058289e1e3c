"""The whole visit in real Chromium with fake devices, in separate browser contexts:
the patient opens the SMS link, waits in the lobby, the provider (launched from the
sandbox EHR) admits them, both are in a call with a playing remote video, the provider
ends the visit. Then the same with a guest the provider invites."""
from __future__ import annotations

import re
import sqlite3
import time

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_provider_visit import launch_visit, patient_token

pytestmark = pytest.mark.browser

PLAYING = """el => el.readyState >= 2 && !el.paused && el.videoWidth > 0"""


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit, call and end visits."""
    server = start_server(tmp_path_factory.mktemp("video-visit"))
    yield server
    stop_server(server)


@pytest.fixture
def provider_page(browser):
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # "End this visit for everyone?"
    yield page
    context.close()


def phone(browser, locale: str):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True,
                                  has_touch=True, locale=locale)
    context.set_default_timeout(10_000)
    return context


def join_from_link(page, url: str):
    page.goto(url)
    expect(page).to_have_url(re.compile(r"/join$"))
    page.get_by_test_id("join-button").click()
    lobby = page.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "waiting")
    return lobby


def expect_in_call(page):
    call = page.get_by_test_id("call")
    expect(call).to_have_attribute("data-state", "connected", timeout=15_000)
    remote = page.get_by_test_id("remote-video").first
    remote.wait_for()
    page.wait_for_function(f"() => ({PLAYING})(document.querySelector('[data-testid=remote-video]'))",
                           timeout=10_000)
    return call


@pytest.mark.parametrize(("sandbox_id", "locale", "lang"), [
    ("appt-1", "es-MX", "es"), ("appt-4", "pt-BR", "pt_BR"), ("appt-5", "en-US", "en")])
def test_patient_lobby_admit_call_and_end(live_app, browser, provider_page, sandbox_id, locale,
                                          lang):
    appointment_id = launch_visit(live_app, provider_page, sandbox_id)
    context = phone(browser, locale)
    patient = context.new_page()
    link = f"{live_app.url}/j/{patient_token(live_app, appointment_id)}"

    lobby = join_from_link(patient, link)
    assert serious_violations(patient) == []
    screenshot(patient, f"patient-lobby-{lang}")
    provider_page.get_by_test_id("admit").click()

    expect(lobby).to_have_attribute("data-state", "admitted")  # the provider joins the call too
    expect_in_call(patient)
    expect_in_call(provider_page)
    assert serious_violations(patient) == []
    screenshot(patient, f"patient-call-{lang}")
    screenshot(provider_page, f"provider-call-{lang}")

    provider_page.locator("#end-visit").click()

    expect(lobby).to_have_attribute("data-state", "ended")
    expect(patient.get_by_test_id("call")).to_have_attribute("data-state", "ended")
    expect(provider_page.get_by_test_id("call")).to_have_attribute("data-state", "ended")
    context.close()


def test_reconnect_in_lobby_keeps_place_and_presence_shows_gap(live_app, browser, provider_page):
    appointment_id = launch_visit(live_app, provider_page, "appt-2")
    context = phone(browser, "pt-BR")
    patient = context.new_page()
    join_from_link(patient, f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
    row = provider_page.locator('[data-testid="participant"][data-role="patient"]')
    expect(row).to_have_attribute("data-presence", "connected")
    context.set_offline(True)  # the phone loses its network

    expect(row).to_have_attribute("data-presence", "disconnected", timeout=5_000)
    context.set_offline(False)

    expect(row).to_have_attribute("data-presence", "connected", timeout=15_000)
    expect(provider_page.get_by_test_id("admit")).to_have_count(1)
    context.close()


def test_guest_invited_by_provider_joins_the_call(live_app, browser, provider_page):
    launch_visit(live_app, provider_page, "appt-3")
    provider_page.locator("#add-role").select_option("guest")
    provider_page.locator("#add-name").fill("Maria Example")
    provider_page.get_by_role("button", name="Create invitation link").click()
    link = provider_page.locator("#invite-link")
    expect(link).to_have_value(re.compile(r"/j/"))
    context = phone(browser, "en-US")
    guest = context.new_page()

    lobby = join_from_link(guest, link.input_value())

    guest_row = provider_page.locator('[data-testid="participant"][data-role="guest"]')
    expect(guest_row).to_have_attribute("data-presence", "connected")
    expect(guest_row).to_contain_text("Maria Example")
    provider_page.get_by_test_id("admit").click()
    expect(lobby).to_have_attribute("data-state", "admitted")  # the provider joins the call too
    expect_in_call(guest)
    expect_in_call(provider_page)

    samples = wait_for_quality_samples(live_app, minimum=2, timeout=25)
    assert all(rtt is not None and rtt >= 0 for _participant, rtt, _kbps in samples)
    assert any(kbps and kbps > 0 for _participant, _rtt, kbps in samples)
    context.close()


def wait_for_quality_samples(live_app, minimum: int, timeout: float) -> list[tuple]:
    """Browsers report call quality every 10 s; poll the app's database until they have."""
    path = live_app.env["VV_DATABASE_URL"].removeprefix("sqlite:///")
    deadline = time.monotonic() + timeout
    rows: list[tuple] = []
    while time.monotonic() < deadline:
        with sqlite3.connect(path) as connection:
            rows = connection.execute("SELECT participant_id, rtt_ms, bitrate_in_kbps "
                                      "FROM call_quality_samples").fetchall()
        if len({participant for participant, _rtt, _kbps in rows}) >= minimum:
            return rows
        time.sleep(0.5)  # polling for the browsers' next report
    raise AssertionError(f"quality samples from {minimum} browsers expected, got {rows}")
