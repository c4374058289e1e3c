"""The same person in two tabs or on two devices: the newest takes over. The older page
says the visit continues elsewhere and releases its camera and microphone; the provider
sees one patient. In real Chromium at 360 x 740 and on a desktop."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.test_provider_visit import launch_visit, patient_token
from tests.browser.test_video_visit import expect_in_call, join_from_link
from tests.browser.test_visit_return import LIVE_TRACKS, RECORD_STREAMS, SCREENS

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: these tests admit patients into calls."""
    server = start_server(tmp_path_factory.mktemp("two-tabs"))
    yield server
    stop_server(server)


def patient_tab(context, errors):
    page = context.new_page()
    page.add_init_script(RECORD_STREAMS)
    page.on("pageerror", lambda error: errors.append(str(error)))
    return page


def expect_replaced(page):
    expect(page.get_by_test_id("replaced")).to_be_visible()
    expect(page.locator("#lobby-title")).to_have_text("Continued on another tab or device")
    expect(page.get_by_test_id("call")).to_be_hidden()
    page.wait_for_function(f"() => window.__streams.length > 0 && ({LIVE_TRACKS})() === 0")


def expect_one_patient(provider):
    patients = provider.locator('[data-testid="participant"][data-role="patient"]')
    expect(patients).to_have_count(1)
    expect(patients).to_have_attribute("data-presence", "connected")


@pytest.mark.parametrize(("screen", "sandbox_id"), [("phone", "appt-1"), ("desktop", "appt-2")])
def test_the_newest_tab_takes_over_and_the_older_releases_its_camera(
        live_app, browser, screen, sandbox_id):
    provider_context = browser.new_context(**SCREENS["desktop"], locale="en-US")
    provider_context.set_default_timeout(10_000)
    provider = provider_context.new_page()
    appointment_id = launch_visit(live_app, provider, sandbox_id)
    link = f"{live_app.url}/j/{patient_token(live_app, appointment_id)}"
    patient_context = browser.new_context(**SCREENS[screen], locale="en-US")
    patient_context.set_default_timeout(10_000)
    errors: list[str] = []
    first = patient_tab(patient_context, errors)
    join_from_link(first, link)
    expect(provider.get_by_test_id("admit")).to_have_count(1)

    second = patient_tab(patient_context, errors)
    join_from_link(second, link)

    expect_replaced(first)
    expect(second.get_by_test_id("lobby")).to_have_attribute("data-state", "waiting")
    expect_one_patient(provider)
    expect(provider.get_by_test_id("admit")).to_have_count(1)
    assert serious_violations(first) == []
    screenshot(first, f"two-tabs-replaced-{screen}")

    provider.get_by_test_id("admit").click()
    expect_in_call(second)
    expect_in_call(provider)
    first.get_by_role("button", name="Use this tab instead").click()  # and back again

    expect_in_call(first)
    expect_replaced(second)  # released in the call too
    expect_one_patient(provider)
    expect(provider.get_by_test_id("remote-video")).to_have_count(1)
    assert errors == []
    patient_context.close()
    provider_context.close()
