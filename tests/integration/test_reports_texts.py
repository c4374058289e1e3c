"""The texts report on hand-made texts with known answers, on SQLite and PostgreSQL: clinic
texts due in the last days (2 confirmations: 1 delivered, 1 refused by Twilio; 2 reminders:
1 undelivered, 1 sent; 1 cancellation not sent: opted out; 1 reminder 30 days ago), two
STOPs and a START today, and upcoming bookings over signed HL7: one whose patient has only
a landline (the shared fixture's PID-13), one with a mobile."""
from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from extensions import db
from notifications import optout
from notifications.models import SmsMessage
from reports import texts
from reports.models import SmsReportDay
from reports.framework import Filters, read_csv
from tests.admin_helpers import create_account, sign_in
from tests.integration.test_hl7_siu_rules import fixture
from tests.integration.test_sms_scheduling import (  # noqa: F401  (hl7_key is a fixture)
    ENDPOINT,
    build_app,
    hl7_key,
    post,
)
from visits.models import Appointment, utcnow

PATH = "/admin/reports/sms"
CHICAGO = ZoneInfo("America/Chicago")


def _booking(app, key, pid13: str, days_ahead: int = 3) -> str:
    """Corepoint's SIU (tests/data/hl7), moved ``days_ahead`` days ahead, with ``pid13``."""
    start = (utcnow() + timedelta(days=days_ahead)).astimezone(CHICAGO).replace(
        hour=9, minute=30, second=0, microsecond=0)
    body, filler = fixture("siu_s14_corepoint_v23.hl7",
                           SCH_11=f"^^^{start.strftime('%Y%m%d%H%M')}", PID_13=pid13)
    assert post(app, key, body) == "AA"
    return filler


def _text(appointment_id: int, kind: str, status: str, age: timedelta,
          code: str | None = None, reason: str | None = None) -> SmsMessage:
    return SmsMessage(appointment_id=appointment_id, kind=kind, language="en",
                      scheduled_for=utcnow() - age, status=status, error_code=code,
                      error_message=reason)


@pytest.fixture
def app(tmp_path, monkeypatch, hl7_key, database_url):  # noqa: F811
    application = build_app(tmp_path, monkeypatch, hl7_key, database_url)
    landline = _booking(application, hl7_key, "(832)795-8259^PRN^PH")
    mobile = _booking(application, hl7_key, "(832)795-8259^PRN^CP")
    with application.app_context():
        ids = {filler: id_ for filler, id_ in db.session.execute(
            sa.select(Appointment.filler_id, Appointment.id))}
        visit = ids[mobile]
        # The booking planned its own texts (due in days); only the hand-made ones count.
        db.session.execute(sa.delete(SmsMessage))
        hour = timedelta(hours=1)
        db.session.add_all([
            _text(visit, "confirmation", "delivered", 2 * hour),
            _text(visit, "confirmation", "failed", 3 * hour, "21211",
                  "the number is not a valid phone number"),
            _text(visit, "reminder", "failed", hour, "30003",
                  "Twilio reported undelivered: the phone is off or out of reach (error 30003)"),
            _text(visit, "reminder", "sent", timedelta(minutes=30)),
            _text(visit, "cancellation", "suppressed", timedelta(minutes=20), None, "opted out"),
            _text(visit, "reminder", "delivered", timedelta(days=30)),
        ])
        endpoint_id = db.session.execute(sa.select(Appointment.endpoint_id).where(
            Appointment.id == visit)).scalar_one()
        optout.opt_out("+16085550101", endpoint_id=endpoint_id)
        optout.opt_in("+16085550101", endpoint_id=endpoint_id)
        optout.opt_out("+16085550101", endpoint_id=endpoint_id)
        optout.opt_out("+16085550102")  # to a number no endpoint sends from
        db.session.commit()
    application.config["fillers"] = {"landline": landline, "mobile": mobile}
    create_account(application, "ann", "analyst")
    yield application
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


def _report(app, **args):
    with app.app_context():
        now = utcnow()
        return texts.build(Filters.parse(args, now), now)


def _rows(report, table: str, key: str) -> dict:
    return {row[key]: row for row in report.table(table).rows}


def test_texts_by_kind_and_outcome_have_the_known_counts(app):
    report = _report(app)

    kinds = _rows(report, "kinds", "kind")
    assert {k: v for k, v in kinds["confirmation"].items() if v} == {
        "kind": "confirmation", "total": 2, "delivered": 1, "failed": 1, "delivered_share": 0.5}
    assert {k: v for k, v in kinds["reminder"].items() if v} == {
        "kind": "reminder", "total": 2, "sent": 1, "undelivered": 1}
    assert kinds["reminder"]["delivered_share"] == 0
    assert {k: v for k, v in kinds["cancellation"].items() if v} == {
        "kind": "cancellation", "total": 1, "not_sent": 1}
    outcomes = {row["outcome"]: row["texts"] for row in report.table("outcomes").rows}
    assert outcomes == {"delivered": 1, "sent": 1, "failed": 1, "undelivered": 1,
                        "not_sent": 1, "cancelled": 0, "scheduled": 0}


def test_failure_reasons_are_codes_and_our_words(app):
    reasons = _report(app).table("reasons").rows

    assert sorted((r["kind"], r["outcome"], r["error_code"], r["texts"]) for r in reasons) == [
        ("cancellation", "not_sent", None, 1), ("confirmation", "failed", "21211", 1),
        ("reminder", "undelivered", "30003", 1)]
    assert {r["reason"] for r in reasons} >= {"opted out",
                                              "the number is not a valid phone number"}


def test_older_texts_count_in_their_own_days(app):
    month_ago = (utcnow() - timedelta(days=30)).astimezone(CHICAGO).date()

    report = _report(app, **{"from": str(month_ago - timedelta(days=1)),
                             "to": str(month_ago + timedelta(days=1))})

    assert _rows(report, "kinds", "kind")["reminder"]["delivered"] == 1
    assert _rows(report, "kinds", "kind")["confirmation"]["total"] == 0


def test_opt_outs_and_opt_ins_per_day(app):
    today = utcnow().astimezone(CHICAGO).date()

    every = _report(app).table("opt").rows
    one = _report(app, endpoint=ENDPOINT).table("opt").rows

    assert len(every) == 7 and every[-1] == {"period": today, "opt_outs": 3, "opt_ins": 1}
    assert one[-1] == {"period": today, "opt_outs": 2, "opt_ins": 1}
    assert sum(row["opt_outs"] for row in every[:-1]) == 0


def test_an_upcoming_booking_whose_patient_has_only_a_landline_needs_follow_up(app):
    follow_up = _report(app).table("follow_up").rows

    assert [row["filler_id"] for row in follow_up] == [app.config["fillers"]["landline"]]
    row = follow_up[0]
    assert row["reason"] == "no mobile number" and row["endpoint"] == ENDPOINT
    assert row["patient"].startswith("Patient?identifier=")
    assert "832" not in json.dumps({k: str(v) for k, v in row.items()})


def test_settled_days_are_counted_once_and_read_back_the_same(app):
    before = _report(app)
    with app.app_context():
        later = utcnow() + timedelta(days=10)
        first = texts.settle(later)
        again = texts.settle(later)
        rows = db.session.scalar(sa.select(sa.func.sum(SmsReportDay.texts)))

    after = _report(app)

    assert first > 30 and again == 0
    assert rows == 6
    for key in ("kinds", "outcomes", "reasons"):
        assert after.table(key).rows == before.table(key).rows, key


def test_the_page_and_its_csv_agree(app):
    client = sign_in(app.test_client(), "ann")

    page = client.get(PATH)
    kinds = client.get(PATH + "?format=csv&table=kinds")
    follow = client.get(PATH + "?format=csv&table=follow_up")

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert app.config["fillers"]["landline"] in html
    assert "795" not in html and "8259" not in html
    rows = {row["kind"]: row for row in read_csv(kinds.get_data(as_text=True))}
    assert rows["confirmation"]["delivered"] == "1" and rows["reminder"]["undelivered"] == "1"
    assert rows["confirmation"]["delivered_share"] == "0.5"
    assert [row["filler_id"] for row in csv.DictReader(io.StringIO(follow.get_data(
        as_text=True)))] == [app.config["fillers"]["landline"]]


def test_the_cli_prints_json_and_csv(app):
    runner = app.test_cli_runner()

    as_json = runner.invoke(args=["reports", "sms", "--json"])
    as_csv = runner.invoke(args=["reports", "sms", "--csv", "--endpoint", ENDPOINT])
    unknown = runner.invoke(args=["reports", "sms", "--json", "--endpoint", "nowhere"])

    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["tables"]["follow_up"][0]["filler_id"] == app.config["fillers"]["landline"]
    assert as_csv.exit_code == 0, as_csv.output
    assert read_csv(as_csv.output)[0]["kind"] == "confirmation"
    assert unknown.exit_code == 2


def test_signed_out_is_sent_to_sign_in_and_an_unknown_endpoint_is_refused(app):
    signed_out = app.test_client().get(PATH)
    unknown = sign_in(app.test_client(), "ann").get(PATH + "?endpoint=nowhere")

    assert signed_out.status_code == 302 and "/admin/login" in signed_out.headers["Location"]
    assert unknown.status_code == 400
    assert 'data-testid="report-error"' in unknown.get_data(as_text=True)
