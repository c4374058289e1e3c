"""Smoke test: the sandbox clinic schedule in a real browser, on a desktop and a phone."""
from __future__ import annotations

import pytest

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot

pytestmark = pytest.mark.browser


def test_schedule_lists_todays_visits_with_actions(live_app, page):
    page.goto(live_app.url + "/sandbox")

    rows = page.get_by_test_id("sandbox-appointment")
    rows.first.wait_for()
    # The seeded clinic has more, but this server is the session's: other tests move some
    # of its visits to other days (the schedule lists today's).
    assert rows.count() >= 1
    first = rows.first
    assert first.get_by_role("button", name="Start virtual visit").count() == 1 or \
        first.get_by_text("Start virtual visit").count() == 1
    assert first.get_by_role("button", name="Send appointment message").is_visible()
    assert serious_violations(page) == []
    path = screenshot(page, "sandbox-schedule-desktop")
    assert path.stat().st_size > 10_000


def test_schedule_fits_a_phone_in_spanish(live_app, phone_page):
    phone_page.goto(live_app.url + "/sandbox")

    phone_page.get_by_test_id("sandbox-appointment").first.wait_for()
    assert phone_page.locator("html").get_attribute("lang") == "es"
    overflow = phone_page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, "the schedule scrolls sideways on a 375 px phone"
    assert serious_violations(phone_page) == []
    screenshot(phone_page, "sandbox-schedule-phone-es")


def test_home_and_error_pages_are_accessible(live_app, page):
    for path in ("/", "/no-such-page"):
        page.goto(live_app.url + path)

        assert serious_violations(page) == [], path
