"""The usage report in real Chromium: reached from the portal's navigation, on a phone
(360 px) and a desktop, in English, Spanish and Brazilian Portuguese, with its charts drawn
as SVG that names itself, without horizontal scrolling and without serious or critical axe
findings; printed, it drops the navigation and the filters but keeps charts and tables.
The server is this module's own, filled by ``flask reports sample-data``."""
from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.report_pages import create_analyst, signed_in_page

pytestmark = pytest.mark.browser



@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("reports-usage"))
    create_analyst(live)
    live.flask("reports", "sample-data", "--visits", "300", "--days", "6",
               "--samples-per-visit", "0")
    yield live
    stop_server(live)


@pytest.mark.parametrize("lang", ["en", "es", "pt_BR"])
def test_the_usage_report_reads_on_a_phone_and_a_desktop(browser, server, lang):
    with signed_in_page(browser, server, lang, timeout_ms=15_000) as page:
        page.get_by_test_id("admin-nav-reports").click()
        page.get_by_test_id("report-link-usage").click()

        periods = page.get_by_test_id("report-periods")
        expect(periods.get_by_test_id("report-row")).to_have_count(7)
        chart = page.get_by_test_id("chart-wait").locator("svg")
        expect(chart).to_have_attribute("role", "img")
        assert page.locator("#chart-wait-title").text_content().strip()
        assert page.locator("html").get_attribute("lang").replace("-", "_") == lang
        assert serious_violations(page) == [], f"desktop {lang}"
        screenshot(page, f"reports-usage-desktop-{lang}")

        page.set_viewport_size({"width": 360, "height": 740})
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        assert serious_violations(page) == [], f"360 px {lang}"
        screenshot(page, f"reports-usage-360-{lang}")

        page.emulate_media(media="print")
        expect(page.get_by_test_id("admin-nav-reports")).to_be_hidden()
        expect(page.get_by_test_id("report-filters")).to_be_hidden()
        expect(chart).to_be_visible()
        expect(periods).to_be_visible()


def test_an_unknown_endpoint_is_refused_on_the_page(browser, server):
    with signed_in_page(browser, server) as page:
        response = page.goto(f"{server.url}/admin/reports/usage?endpoint=nope")

        assert response.status == 400
        expect(page.get_by_test_id("report-error")).to_contain_text("nope")
        assert serious_violations(page) == []
