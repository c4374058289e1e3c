"""The call-quality report, a visit's timeline and the texts report in real Chromium: on a
phone (360 px) and a desktop, in English, Spanish and Brazilian Portuguese, they show the
planted figures without horizontal scrolling and without serious or critical axe findings.
The server is this module's own; its rows are planted through the app's own functions
(``calls.record_quality``) into the server's SQLite file."""
from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from app import create_app
from ehr.models import EhrEndpoint
from extensions import db
from notifications.models import SmsMessage
from tests.browser.accessibility import serious_violations
from tests.browser.conftest import screenshot, start_server, stop_server
from tests.browser.report_pages import create_analyst, signed_in_page
from tests.conftest import make_config
from tests.factories import make_visit
from visits import calls
from visits.models import utcnow
from visits.quality import families

pytestmark = pytest.mark.browser

IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")


def _plant(workdir) -> int:
    """A visit with a poor, relayed call (2 people, 3 samples each), and its texts: one
    delivered confirmation, one undelivered reminder. Returns the visit's id."""
    app = create_app(make_config(workdir / "planter", SANDBOX=False,
                                 DATABASE_URL=f"sqlite:///{workdir / 'app.db'}"))
    with app.app_context():
        endpoint = db.session.execute(db.select(EhrEndpoint).filter_by(name="sandbox")).scalar_one()
        visit = make_visit(endpoint, "browser-quality")
        start = utcnow() - timedelta(minutes=5)
        for participant in (visit.patient, visit.provider):
            for n in range(3):
                calls.record_quality(participant.id, {
                    "rtt_ms": 420, "jitter_ms": 35, "packet_loss_pct": 9,
                    "bitrate_in_kbps": 120, "bitrate_out_kbps": 130, "relayed": True},
                    start + timedelta(seconds=10 * n), families=families(IPHONE))
        db.session.add_all([
            SmsMessage(appointment_id=visit.appointment.id, kind="confirmation", language="en",
                       scheduled_for=utcnow() - timedelta(hours=1), status="delivered"),
            SmsMessage(appointment_id=visit.appointment.id, kind="reminder", language="en",
                       scheduled_for=utcnow() - timedelta(minutes=30), status="failed",
                       error_code="30003", error_message="Twilio reported undelivered: the "
                       "phone is off or out of reach (error 30003)")])
        db.session.commit()
        appointment_id = visit.appointment.id
        db.session.remove()
        db.engine.dispose()
    return appointment_id


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reports-quality")
    live = start_server(workdir)
    create_analyst(live)
    live.visit = _plant(workdir)
    yield live
    stop_server(live)


def _check_page(page, name: str, lang: str) -> None:
    """axe on a desktop, then at 360 px with nothing wider than the screen."""
    assert serious_violations(page) == [], f"{name} desktop {lang}"
    page.set_viewport_size({"width": 360, "height": 740})
    assert page.evaluate("document.documentElement.scrollWidth") <= 360, f"{name} 360 px {lang}"
    assert serious_violations(page) == [], f"{name} 360 px {lang}"
    screenshot(page, f"reports-{name}-360-{lang}")
    page.set_viewport_size({"width": 1280, "height": 800})


@pytest.mark.parametrize("lang", ["en", "es", "pt_BR"])
def test_quality_timeline_and_texts_read_on_a_phone_and_a_desktop(browser, server, lang):
    with signed_in_page(browser, server, lang, timeout_ms=15_000) as page:

        page.goto(f"{server.url}/admin/reports/quality")
        summary = page.get_by_test_id("report-summary")
        expect(summary.locator('[data-column="people"]')).to_have_text("2")
        expect(page.get_by_test_id("chart-mos-chart")).to_be_visible()
        assert page.locator("html").get_attribute("lang").replace("-", "_") == lang
        _check_page(page, "quality", lang)

        page.locator(f'[data-testid="worst-visit-link"][data-visit="{server.visit}"]').click()
        expect(page.get_by_test_id("timeline-minute").first).to_be_visible()
        assert page.get_by_test_id("timeline-minute").count() >= 2
        _check_page(page, "quality-timeline", lang)

        page.goto(f"{server.url}/admin/reports/sms")
        kinds = page.get_by_test_id("report-kinds")
        expect(kinds.locator('[data-key="reminder"] [data-column="undelivered"]')).to_have_text("1")
        expect(page.get_by_test_id("report-follow_up")).to_be_visible()
        _check_page(page, "sms", lang)

        page.emulate_media(media="print")
        expect(page.get_by_test_id("report-filters")).to_be_hidden()
        expect(kinds).to_be_visible()
