"""The integration health report in real Chromium: on a phone (360 px) and a desktop, in
English, Spanish and Brazilian Portuguese, it shows the known figures without horizontal
scrolling and without serious or critical axe findings; the admin home warns about the
write-back stuck for 20 minutes. The server is this module's own (its rows are planted)."""
from __future__ import annotations

import re
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.report_pages import create_analyst, signed_in_page

pytestmark = pytest.mark.browser



def _stored(moment: datetime) -> str:
    """How SQLAlchemy keeps a UTC time in SQLite."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reports-health")
    live = start_server(workdir)
    create_analyst(live)
    now = datetime.now(timezone.utc)
    with sqlite3.connect(workdir / "app.db") as connection:
        (endpoint_id,) = connection.execute(
            "SELECT id FROM ehr_endpoints WHERE name = 'sandbox'").fetchone()
        # Not due for a day, so the server's own outbox leaves it pending.
        connection.execute(
            "INSERT INTO writeback_outbox (endpoint_id, resource_type, business_identifier, "
            "payload, status, attempts, next_attempt_at, last_error, created_at) "
            "VALUES (?, 'Observation', 'health-browser-1', '{}', 'pending', 3, ?, "
            "'HTTP 503', ?)",
            (endpoint_id, _stored(now + timedelta(days=1)), _stored(now - timedelta(minutes=20))))
    yield live
    stop_server(live)


@pytest.mark.parametrize("lang", ["en", "es", "pt_BR"])
def test_the_health_report_reads_on_a_phone_and_a_desktop(browser, server, lang):
    with signed_in_page(browser, server, lang, timeout_ms=10_000) as page:
        banner = page.get_by_test_id("health-banner")
        expect(banner.get_by_test_id("health-alert")).to_have_attribute(
            "data-kind", "writeback_pending")
        assert serious_violations(page) == [], f"home {lang}"

        page.get_by_test_id("admin-nav-health").click()
        row = page.locator('[data-testid="health-device-test-row"][data-endpoint="sandbox"]')
        expect(row.get_by_test_id("device-tests-pending")).to_have_text("1")
        expect(page.locator('[data-testid="health-writeback-row"][data-endpoint="sandbox"]')
               .get_by_test_id("writebacks-oldest")).to_have_text(re.compile(r"^2[01] min$"))
        assert page.locator("html").get_attribute("lang").replace("-", "_") == lang
        assert serious_violations(page) == [], f"desktop {lang}"

        page.set_viewport_size({"width": 360, "height": 740})
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert serious_violations(page) == [], f"360 px {lang}"
        screenshot(page, f"reports-health-360-{lang}")

        page.emulate_media(media="print")
        expect(page.get_by_test_id("admin-nav-health")).to_be_hidden()
        expect(page.get_by_test_id("health-hl7")).to_be_visible()
