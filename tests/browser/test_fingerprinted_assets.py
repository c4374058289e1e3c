"""Real Chromium against the real server (gevent): the join page, the lobby and the
provider's visit page load every script and stylesheet from fingerprinted, compressed,
immutable URLs, the ES modules' imports included, and still work: the patient waits, the
provider admits them."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import start_server, stop_server
from tests.browser.test_provider_visit import launch_visit, patient_token

pytestmark = pytest.mark.browser

IMMUTABLE = "public, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def live_app(tmp_path_factory):
    """A server of its own: the test admits a patient."""
    server = start_server(tmp_path_factory.mktemp("fingerprints"))
    yield server
    stop_server(server)


def record_static(page) -> list[tuple[str, int, dict]]:
    """(URL, status, headers) of every /static/ response the page gets."""
    seen: list[tuple[str, int, dict]] = []
    page.on("response", lambda response: seen.append(
        (response.url, response.status, response.all_headers()))
        if "/static/" in response.url else None)
    return seen


def assert_fingerprinted(seen: list[tuple[str, int, dict]]) -> None:
    assert seen
    for url, status, headers in seen:
        assert re.search(r"\?v=[0-9a-f]{12}$", url), url
        assert status == 200, url
        assert headers.get("cache-control") == IMMUTABLE, url
        if url.split("?")[0].endswith((".js", ".css")):
            assert headers.get("content-encoding") in ("br", "gzip"), url


def test_join_page_lobby_and_visit_page_work_from_fingerprinted_assets(live_app, browser):
    provider_context = browser.new_context(locale="en-US")
    provider_context.set_default_timeout(10_000)
    provider = provider_context.new_page()
    provider_static = record_static(provider)
    appointment_id = launch_visit(live_app, provider, "appt-2")
    patient_context = browser.new_context(viewport={"width": 360, "height": 740},
                                          is_mobile=True, has_touch=True, locale="en-US")
    patient_context.set_default_timeout(10_000)
    patient = patient_context.new_page()
    patient_static = record_static(patient)
    errors: list[str] = []
    patient.on("pageerror", lambda error: errors.append(str(error)))

    patient.goto(f"{live_app.url}/j/{patient_token(live_app, appointment_id)}")
    expect(patient).to_have_url(re.compile(r"/join$"))
    patient.get_by_test_id("join-button").click()
    lobby = patient.get_by_test_id("lobby")
    expect(lobby).to_have_attribute("data-state", "waiting")
    provider.get_by_test_id("admit").click()

    expect(lobby).to_have_attribute("data-state", "admitted")
    assert errors == []
    assert_fingerprinted(patient_static)
    assert_fingerprinted(provider_static)
    loaded = {url.split("?")[0].rsplit("/static/", 1)[1] for url, _s, _h in patient_static}
    # The page's static imports and the lazily imported visit session (its styles and
    # its own script are inline: fewer round trips on a slow network).
    assert {"js/media.js", "js/visit_session.js", "js/socket.js",
            "vendor/socket.io-4.8.4.esm.min.js"} <= loaded
    provider_loaded = {url.split("?")[0].rsplit("/static/", 1)[1]
                       for url, _s, _h in provider_static}
    assert "css/base.css" in provider_loaded
    provider_context.close()
    patient_context.close()
