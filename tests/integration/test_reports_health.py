"""/admin/reports/health, its CSV, the admin home's banner, /metrics and `flask reports
health`, on hand-made rows with known answers: clinic-a has 3 pending write-backs (the
oldest 20 minutes old, one an Observation), 1 failed Observation, 1 sent; 2 AA and 1 AE
acknowledgements today and an AR a month ago; 2 failed token requests 5 minutes ago.
clinic-b has nothing."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from urllib.parse import urlsplit

import pytest

from admin.models import AdminRole
from ehr import backend_auth
from ehr.errors import EhrUnavailable, TokenRefused
from ehr.models import BackendTokenFailure, WritebackOutbox
from ehr.services import ensure_endpoint
from extensions import db
from hl7feed.models import AckCode, Hl7MessageReceipt
from hl7feed.services import acknowledge
from tests.admin_helpers import create_account, sign_in
from tests.conftest import build_app, dispose_app
from visits.models import utcnow

PATH = "/admin/reports/health"


def _outbox(endpoint_id: int, n: int, status: str, resource: str, age_minutes: float,
            error: str | None = None) -> WritebackOutbox:
    return WritebackOutbox(endpoint_id=endpoint_id, resource_type=resource,
                           business_identifier=f"fact-{n}", payload={"resourceType": resource},
                           status=status, attempts=1, last_error=error,
                           created_at=utcnow() - timedelta(minutes=age_minutes))


def _receipt(endpoint_id: int, n: int, ack: str | None, age: timedelta) -> Hl7MessageReceipt:
    return Hl7MessageReceipt(endpoint_id=endpoint_id, sender="EPIC^CLINIC", control_id=f"c{n}",
                             message_type="SIU^S12", received_at=utcnow() - age, ack_code=ack)


def seed(application) -> None:
    with application.app_context():
        a = ensure_endpoint("clinic-a", "https://a.example.org/fhir", client_id="vv",
                            scopes="launch", approved_by="t", site_timezone="America/Chicago")
        ensure_endpoint("clinic-b", "https://b.example.org/fhir", client_id="vv",
                        scopes="launch", approved_by="t", site_timezone="UTC")
        db.session.flush()
        db.session.add_all([
            _outbox(a.id, 1, "pending", "AuditEvent", 20, "HTTP 503"),
            _outbox(a.id, 2, "pending", "Observation", 10),
            _outbox(a.id, 3, "pending", "AuditEvent", 5),
            _outbox(a.id, 4, "failed", "Observation", 30, "HTTP 422 processing"),
            _outbox(a.id, 5, "sent", "AuditEvent", 40),
        ])
        receipts = [
            _receipt(a.id, 1, "AA", timedelta(hours=1)),
            _receipt(a.id, 2, "AA", timedelta(minutes=50)),
            _receipt(a.id, 3, "AE", timedelta(minutes=40)),
            _receipt(a.id, 4, None, timedelta(minutes=1)),  # still being applied: no ACK yet
            _receipt(a.id, 5, "AR", timedelta(days=30)),
        ]
        for receipt in receipts:
            code, receipt.ack_code = receipt.ack_code, None
            db.session.add(receipt)
            db.session.flush()
            if code is not None:  # as the intake answers it: the code and its count
                acknowledge(receipt, AckCode(code))
        db.session.commit()
        backend_auth.record_failure(a.id, TokenRefused("invalid_client"))
        backend_auth.record_failure(a.id, EhrUnavailable("token endpoint: HTTP 503"))
        db.session.execute(db.update(BackendTokenFailure).values(
            at=utcnow() - timedelta(minutes=5)))
        db.session.commit()


@pytest.fixture
def app(tmp_path, monkeypatch):
    application = build_app(tmp_path, monkeypatch, SANDBOX=False)
    seed(application)
    create_account(application, "ada", "admin")
    create_account(application, "ann", "analyst")
    yield application
    dispose_app(application)


def _row(html: str, testid: str, endpoint: str) -> str:
    start = html.index(f'data-testid="{testid}" data-endpoint="{endpoint}"')
    return html[start:html.index("</tr>", start)]


def test_the_report_shows_the_known_figures(app):
    client = sign_in(app.test_client(), "ann")

    html = client.get(PATH).get_data(as_text=True)

    hl7 = _row(html, "health-hl7-row", "clinic-a")
    assert 'data-testid="hl7-aa">2<' in hl7
    assert 'data-testid="hl7-ae" class="status-bad">1<' in hl7
    assert 'data-testid="hl7-ar" class="">0<' in hl7
    writebacks = _row(html, "health-writeback-row", "clinic-a")
    assert 'data-testid="writebacks-pending">3<' in writebacks
    assert 'data-testid="writebacks-failed" class="status-bad">1<' in writebacks
    assert 'data-testid="writebacks-oldest">20 min<' in writebacks
    assert "<code>HTTP 422 processing</code>" in writebacks
    device = _row(html, "health-device-test-row", "clinic-a")
    assert 'data-testid="device-tests-pending">1<' in device
    assert 'data-testid="device-tests-failed" class="status-bad">1<' in device
    tokens = _row(html, "health-token-row", "clinic-a")
    assert 'data-testid="token-failures" class="status-bad">2<' in tokens
    assert "<code>EhrUnavailable HTTP 503</code>" in tokens
    assert 'data-testid="writebacks-pending">0<' in _row(html, "health-writeback-row",
                                                         "clinic-b")


def test_the_endpoint_and_dates_narrow_the_report(app):
    client = sign_in(app.test_client(), "ann")
    month_ago = (utcnow() - timedelta(days=30)).date()

    only_b = client.get(PATH + "?endpoint=clinic-b").get_data(as_text=True)
    old = client.get(f"{PATH}?endpoint=clinic-a&from={month_ago - timedelta(days=1)}"
                     f"&to={month_ago + timedelta(days=1)}").get_data(as_text=True)

    assert 'data-endpoint="clinic-a"' not in only_b
    assert 'data-endpoint="clinic-b"' in only_b
    hl7 = _row(old, "health-hl7-row", "clinic-a")
    assert 'data-testid="hl7-aa">0<' in hl7 and 'data-testid="hl7-ar" class="status-bad">1<' in hl7


@pytest.mark.parametrize("query", ["from=yesterday", "from=2026-12-05&to=2026-12-01",
                                   "from=2020-01-01&to=2026-01-01"])
def test_unusable_dates_are_refused_with_a_message(app, query):
    client = sign_in(app.test_client(), "ada")

    response = client.get(f"{PATH}?{query}")

    assert response.status_code == 400
    assert 'data-testid="health-error"' in response.get_data(as_text=True)


def test_every_table_downloads_as_csv_with_the_same_figures(app):
    client = sign_in(app.test_client(), "ada")

    whole = client.get(PATH + "?format=csv")
    tables = {name: client.get(f"{PATH}?format=csv&table={name}")
              for name in ("hl7", "writebacks", "device_tests", "tokens")}

    assert whole.mimetype == "text/csv"
    assert "attachment" in whole.headers["Content-Disposition"]
    rows = {row["endpoint"]: row for row in csv.DictReader(io.StringIO(whole.get_data(as_text=True)))}
    a = rows["clinic-a"]
    assert (a["hl7_aa"], a["hl7_ae"], a["hl7_ar"]) == ("2", "1", "0")
    assert (a["writebacks_pending"], a["writebacks_failed"]) == ("3", "1")
    assert 1195 <= int(a["oldest_pending_seconds"]) <= 1300
    assert (a["device_tests_pending"], a["device_tests_failed"]) == ("1", "1")
    assert (a["token_failures"], a["last_error"]) == ("2", "HTTP 422 processing")
    assert rows["clinic-b"]["writebacks_pending"] == "0"
    assert rows["clinic-b"]["hl7_last_received_at"] == ""
    hl7 = list(csv.DictReader(io.StringIO(tables["hl7"].get_data(as_text=True))))
    assert list(hl7[0]) == ["endpoint", "hl7_last_received_at", "hl7_aa", "hl7_ae", "hl7_ar"]
    for name, response in tables.items():
        parsed = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
        assert [row["endpoint"] for row in parsed] == ["clinic-a", "clinic-b"], name
        for row in parsed:
            for column, value in row.items():
                expected = rows[row["endpoint"]][column]
                if column == "oldest_pending_seconds" and value:  # a second may have passed
                    assert abs(int(value) - int(expected)) <= 2, name
                else:
                    assert value == expected, (name, column)


def test_signed_out_visitors_are_sent_to_sign_in(app):
    response = app.test_client().get(PATH + "?format=csv")

    assert response.status_code == 302
    assert urlsplit(response.headers["Location"]).path == "/admin/login"


def test_admins_and_analysts_may_read_it_and_no_one_else(app):
    view = app.view_functions["admin.reports.health_report"]

    for name in ("ada", "ann"):
        assert sign_in(app.test_client(), name).get(PATH).status_code == 200
    # Every role the portal has may read reports; a role added later is refused (403)
    # unless it is named here (the permission matrix in test_admin_permissions.py).
    assert set(view.admin_roles) == {AdminRole.ADMIN, AdminRole.ANALYST}


def test_the_page_is_linked_from_the_navigation_and_home(app):
    client = sign_in(app.test_client(), "ann")

    home = client.get("/admin/").get_data(as_text=True)

    assert 'data-testid="admin-nav-health"' in home
    assert 'data-testid="home-health-report"' in home


def test_the_home_banner_shows_what_fails_too_long_and_goes_when_it_stops(app):
    client = sign_in(app.test_client(), "ada")

    failing = client.get("/admin/").get_data(as_text=True)
    with app.app_context():
        db.session.execute(db.update(WritebackOutbox).where(WritebackOutbox.status == "pending")
                           .values(status="sent"))
        db.session.execute(db.delete(BackendTokenFailure))
        db.session.commit()
    healthy = client.get("/admin/").get_data(as_text=True)

    assert 'data-testid="health-banner"' in failing
    assert 'data-endpoint="clinic-a" data-kind="writeback_pending"' in failing
    assert 'data-endpoint="clinic-a" data-kind="token_failures"' in failing
    assert 'data-testid="health-alert" data-endpoint="clinic-b"' not in failing
    assert 'data-testid="health-banner"' not in healthy


def test_the_threshold_is_a_setting(tmp_path, monkeypatch):
    application = build_app(tmp_path, monkeypatch, SANDBOX=False,
                            REPORTS_HEALTH_ALERT_MINUTES=25)
    try:
        seed(application)
        create_account(application, "ada", "admin")

        html = sign_in(application.test_client(), "ada").get("/admin/").get_data(as_text=True)

        # The oldest write-back (20 min) is within 25 minutes; the token failures (5 min
        # ago) are within it too, so they still count.
        assert 'data-kind="writeback_pending"' not in html
        assert 'data-kind="token_failures"' in html
    finally:
        dispose_app(application)


def test_metrics_carry_the_figures_by_endpoint(app):
    text = app.test_client().get("/metrics").get_data(as_text=True)

    assert 'vv_writebacks_pending{endpoint="clinic-a"} 3.0' in text
    assert 'vv_writebacks_failed{endpoint="clinic-a"} 1.0' in text
    assert 'vv_writebacks_pending{endpoint="clinic-b"} 0.0' in text
    assert 'vv_device_test_writebacks_pending{endpoint="clinic-a"} 1.0' in text
    assert 'vv_device_test_writebacks_failed{endpoint="clinic-a"} 1.0' in text
    assert 'vv_hl7_messages_total{ack="AA",endpoint="clinic-a"} 2.0' in text
    assert 'vv_hl7_messages_total{ack="AE",endpoint="clinic-a"} 1.0' in text
    assert 'vv_hl7_messages_total{ack="AR",endpoint="clinic-a"} 1.0' in text
    assert 'vv_hl7_last_message_timestamp_seconds{endpoint="clinic-a"}' in text
    assert 'vv_backend_token_failures_recent{endpoint="clinic-a"} 2.0' in text
    oldest = next(line for line in text.splitlines()
                  if line.startswith('vv_writeback_oldest_pending_seconds{endpoint="clinic-a"}'))
    assert 1195 <= float(oldest.split()[-1]) <= 1300
    assert "Patient" not in text


def test_the_cli_prints_json_and_csv(app):
    runner = app.test_cli_runner()
    today = utcnow().date()

    as_json = runner.invoke(args=["reports", "health", "--from", str(today - timedelta(days=2)),
                                  "--to", str(today + timedelta(days=1)), "--json"])
    as_csv = runner.invoke(args=["reports", "health", "--endpoint", "clinic-a", "--csv"])
    unknown = runner.invoke(args=["reports", "health", "--endpoint", "nope", "--json"])

    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    a = next(row for row in data["endpoints"] if row["endpoint"] == "clinic-a")
    assert (a["hl7_aa"], a["hl7_ae"], a["writebacks_pending"], a["token_failures"]) == (2, 1, 3, 2)
    assert {alert["kind"] for alert in data["alerts"]} == {"writeback_pending", "token_failures"}
    assert as_csv.exit_code == 0, as_csv.output
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert [(r["endpoint"], r["writebacks_pending"]) for r in rows] == [("clinic-a", "3")]
    assert unknown.exit_code == 2


def test_the_report_reads_the_big_tables_through_indexes(app):
    """SQLite's plans: receipts, write-backs and token failures are searched by an index,
    never scanned (sent write-backs and old receipts are the bulk of those tables)."""
    import sqlalchemy as sa

    from reports import health

    statements: list[tuple[str, object]] = []
    with app.app_context():
        def grab(_conn, _cursor, statement, params, _context, _many):
            statements.append((statement, params))

        sa.event.listen(db.engine, "before_cursor_execute", grab)
        try:
            health.health_report(health.DateRange.parse(None, None, utcnow().date()), utcnow())
            health.current_alerts(utcnow(), 15)
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", grab)
        plans = []
        with db.engine.connect() as connection:
            for statement, params in statements:
                plans += [row[-1] for row in connection.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + statement, params)]

    big = ("hl7_message_receipts", "writeback_outbox", "backend_token_failures")
    scans = [line for line in plans if line.startswith("SCAN") and any(t in line for t in big)]
    assert scans == []
    assert any("ix_hl7_message_receipts_endpoint_id_received_at" in line for line in plans)
