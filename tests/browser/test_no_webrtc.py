"""Issue 14, item 15, in Chromium with ``window.RTCPeerConnection`` deleted before any page
script runs (as Debian's WebKitGTK has none), at 360 x 740 and on a desktop:

- the join page says before Join that this browser cannot make the call, and which browser
  to use instead on this device; the waiting room says it again, the provider's page shows
  why there will be no video, and after the admit the patient is told instead of waiting
  forever (no call is attempted, no JavaScript error);
- the device test fails the test call, never says the visit "should work well", and the
  result stored (and filed to the chart) is a fail.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_device_test import CHECKS, run_device_test
from tests.browser.test_honest_visit import SCREENS, no_sideways_scroll
from tests.browser.test_patient_join_page import join_link
from tests.browser.test_provider_visit import launch_visit, patient_token

pytestmark = pytest.mark.browser

NO_WEBRTC = "delete window.RTCPeerConnection; delete window.webkitRTCPeerConnection;"
TITLE = {"en-US": "This browser can't make video calls",
         "es-MX": "Este navegador no puede hacer videollamadas",
         "pt-BR": "Este navegador não consegue fazer chamadas de vídeo"}
# What to use instead, by device (the phone is Android Chrome).
INSTEAD = {("phone", "en-US"): "an up-to-date Chrome or Samsung Internet",
           ("desktop", "es-MX"): "Chrome, Edge, Firefox o Safari actualizados",
           ("phone", "pt-BR"): "Chrome ou Samsung Internet atualizado"}


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit and end visits."""
    server = start_server(tmp_path_factory.mktemp("no-webrtc"))
    yield server
    stop_server(server)


def page_without_webrtc(browser, screen: str, locale: str):
    context = browser.new_context(**SCREENS[screen], locale=locale)
    context.set_default_timeout(15_000)
    context.add_init_script(NO_WEBRTC)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return context, page, errors


@pytest.mark.parametrize(("screen", "locale", "sandbox_id"), [
    ("phone", "en-US", "appt-1"), ("desktop", "es-MX", "appt-2"), ("phone", "pt-BR", "appt-3")])
def test_a_browser_that_cannot_call_is_told_before_the_lobby_and_the_provider_sees_why(
        live_app, browser, screen, locale, sandbox_id):
    provider_context = browser.new_context(locale="en-US")
    provider_context.set_default_timeout(15_000)
    provider = provider_context.new_page()
    provider.on("dialog", lambda dialog: dialog.accept())
    appointment_id = launch_visit(live_app, provider, sandbox_id)
    context, patient, errors = page_without_webrtc(browser, screen, locale)
    patient.goto(f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")

    warning = patient.get_by_test_id("no-webrtc")

    expect(warning).to_be_visible()
    expect(warning).to_contain_text(TITLE[locale])
    expect(warning).to_contain_text(INSTEAD[(screen, locale)])
    # Said before Join, without scrolling past it on a phone.
    box = warning.bounding_box()
    join_box = patient.get_by_test_id("join-button").bounding_box()
    assert box["y"] < join_box["y"]
    no_sideways_scroll(patient)
    assert serious_violations(patient) == []
    screenshot(patient, f"no-webrtc-join-{screen}-{locale}")

    patient.get_by_test_id("join-button").click()

    lobby = patient.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "waiting")
    expect(patient.locator("#lobby-no-webrtc")).to_be_visible()
    expect(patient.locator("#lobby-no-webrtc")).to_contain_text(INSTEAD[(screen, locale)])
    badge = provider.locator('[data-testid="participant"][data-role="patient"] '
                             '[data-testid="participant-media"]')
    expect(badge).to_have_attribute("data-webrtc", "false")
    expect(badge).to_contain_text("Their browser can't make video calls")
    assert serious_violations(patient) == []
    assert serious_violations(provider) == []
    screenshot(patient, f"no-webrtc-lobby-{screen}-{locale}")

    provider.get_by_test_id("admit").click()

    expect(lobby).to_have_attribute("data-state", "admitted")
    expect(patient.get_by_test_id("lobby-status")).to_contain_text(TITLE[locale].lower()[5:])
    expect(patient.get_by_test_id("lobby-status")).to_contain_text(INSTEAD[(screen, locale)])
    expect(patient.get_by_test_id("call")).to_be_hidden()
    expect(patient.locator("#lobby-no-webrtc")).to_be_hidden()
    assert serious_violations(patient) == []
    screenshot(patient, f"no-webrtc-admitted-{screen}-{locale}")

    provider.locator("#end-visit").click()

    expect(lobby).to_have_attribute("data-state", "ended")
    assert errors == []
    context.close()
    provider_context.close()


@pytest.mark.parametrize("screen", ["phone", "desktop"])
def test_the_device_test_without_webrtc_stores_a_fail_and_never_says_it_will_work(
        live_app, browser, screen):
    link = join_link(live_app, "appt-6")
    context, page, errors = page_without_webrtc(browser, screen, "en-US")
    page.goto(link)
    href = page.get_by_test_id("device-test-link").get_attribute("href")

    with page.expect_response(re.compile(r"/device-test/results$"), timeout=90_000) as posted:
        statuses = run_device_test(page, live_app.url + href)

    screenshot(page, f"no-webrtc-device-test-{screen}")
    assert statuses["test-call"] == "fail"
    assert statuses["speaker"] == "pass" and statuses["camera"] == "pass"
    summary = page.get_by_test_id("device-test-summary")
    expect(summary).to_have_attribute("data-status", "fail")
    expect(summary).to_contain_text("Your video visit will not work in this browser")
    expect(summary).to_contain_text("can't make video calls")
    expect(summary).not_to_contain_text("should work well")
    expect(page.get_by_test_id("browser-problem")).to_be_visible()
    reply = posted.value.json()
    assert reply["overall"] == "fail" and reply["written_back"] is True
    assert set(statuses) == set(CHECKS)
    assert serious_violations(page) == []
    assert errors == []
    context.close()
