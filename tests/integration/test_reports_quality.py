"""The call-quality report on samples with known answers, stored the way the call stores
them (``calls.record_quality``), on SQLite and PostgreSQL:

* visit "good": patient on Chrome/Android and provider on Chrome/Windows, 3 samples each,
  RTT 50 and 70 ms, jitter 5 ms, no loss, 800 and 1200 kbit/s, direct;
* visit "bad": patient and provider on Safari/iOS, 2 samples each, RTT 400 ms, jitter
  40 ms, 10 % loss, 100 kbit/s, relayed through TURN (MOS 1.66: poor);
* visit "old": 30 days ago, outside the default range.

So: 2 visits, 4 people, 10 samples (100 s), 4 poor; mean RTT (150 + 210 + 1600) / 10 = 196.
"""
from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from extensions import db
from reports import quality, retention
from reports.framework import Filters, read_csv
from tests.admin_helpers import create_account, sign_in
from tests.conftest import build_app, dispose_app
from tests.factories import make_endpoint, make_visit
from visits import calls
from visits.models import (
    CallQualityDay,
    CallQualityRollup,
    CallQualitySample,
    CallQualityVisit,
    LobbyEntry,
    PresenceEvent,
    utcnow,
)
from visits.quality import (
    estimate_mos,
    families,
    purge_samples,
    rebuild_summaries,
    rollups_from_samples,
)

PATH = "/admin/reports/quality"
ANDROID = ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Mobile Safari/537.36")
WINDOWS = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
           "Chrome/131.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1")
GOOD = {"jitter_ms": 5, "packet_loss_pct": 0, "relayed": False}
BAD = {"rtt_ms": 400, "jitter_ms": 40, "packet_loss_pct": 10, "bitrate_in_kbps": 100,
       "bitrate_out_kbps": 100, "relayed": True}


def _samples(participant_id: int, start, count: int, sample: dict, agent: str) -> None:
    for n in range(count):
        assert calls.record_quality(participant_id, sample, start + timedelta(seconds=10 * n),
                                    families=families(agent))


def seed(application) -> dict[str, int]:
    with application.app_context():
        endpoint = make_endpoint()
        endpoint.site_timezone = "America/Chicago"
        good = make_visit(endpoint, "good")
        bad = make_visit(endpoint, "bad")
        old = make_visit(endpoint, "old")
        start = utcnow() - timedelta(minutes=10)
        _samples(good.patient.id, start, 3, {**GOOD, "rtt_ms": 50, "bitrate_in_kbps": 800},
                 ANDROID)
        _samples(good.provider.id, start, 3, {**GOOD, "rtt_ms": 70, "bitrate_in_kbps": 1200},
                 WINDOWS)
        _samples(bad.patient.id, start + timedelta(seconds=55), 2, BAD, IPHONE)
        _samples(bad.provider.id, start + timedelta(seconds=55), 2, BAD, IPHONE)
        _samples(old.patient.id, start - timedelta(days=30), 2, BAD, IPHONE)
        db.session.add_all([
            LobbyEntry(participant_id=bad.patient.id, entered_at=start - timedelta(minutes=2),
                       admitted_at=start - timedelta(minutes=1),
                       admitted_by_participant_id=bad.provider.id),
            PresenceEvent(participant_id=bad.patient.id, kind="connected",
                          at=start - timedelta(minutes=2)),
            PresenceEvent(participant_id=bad.patient.id, kind="disconnected",
                          at=start + timedelta(minutes=3)),
        ])
        db.session.commit()
        return {"good": good.appointment.id, "bad": bad.appointment.id,
                "old": old.appointment.id, "good_patient": good.patient.id,
                "bad_patient": bad.patient.id, "bad_provider": bad.provider.id}


@pytest.fixture
def app(tmp_path, monkeypatch, database_url):
    application = build_app(tmp_path, monkeypatch, SANDBOX=False, DATABASE_URL=database_url)
    application.config["visits"] = seed(application)
    create_account(application, "ann", "analyst")
    create_account(application, "ada", "admin")
    yield application
    dispose_app(application)


def _report(app, **args):
    with app.app_context():
        now = utcnow()
        return quality.build(Filters.parse(args, now), now)


def test_the_mos_estimate_follows_the_device_test():
    assert estimate_mos(0, 0, 0) == pytest.approx(4.40, abs=0.01)
    assert estimate_mos(400, 40, 10) == pytest.approx(1.66, abs=0.01)
    assert estimate_mos(None, 5, 0) is None


def test_families_are_coarse_and_the_agent_is_not_kept():
    assert families(ANDROID) == ("Chrome", "Android")
    assert families(WINDOWS) == ("Chrome", "Windows")
    assert families(IPHONE) == ("Safari", "iOS")
    assert families("curl/8.0") == ("Other", "Other")
    assert families(None) == (None, None)


def test_the_summary_has_the_known_figures(app):
    summary = _report(app).table("summary").rows[0]

    assert summary["visits"] == 2 and summary["people"] == 4
    assert summary["call_seconds"] == 100
    assert summary["rtt_ms"] == 196.0
    assert summary["loss_pct"] == 4.0
    assert summary["poor_share"] == pytest.approx(0.4)
    assert summary["relayed_share"] == pytest.approx(0.5)
    assert summary["relayed_visits_share"] == pytest.approx(0.5)
    assert summary["mos"] == pytest.approx((6 * estimate_mos(60, 5, 0) + 4 * 1.66) / 10,
                                           abs=0.02)


def test_distributions_count_every_sample_in_its_range(app):
    report = _report(app)

    rtt = {row["range"]: row["samples"] for row in report.table("rtt").rows}
    mos = {row["range"]: row["samples"] for row in report.table("mos").rows}
    loss = report.table("loss").rows

    assert rtt == {"< 100": 6, "100–200": 0, "200–300": 0, "300–500": 4, "≥ 500": 0}
    assert mos["< 2.5"] == 4 and mos["≥ 4"] == 6
    assert [row["samples"] for row in loss] == [6, 0, 0, 0, 4]
    assert loss[0]["share"] == pytest.approx(0.6)


def test_breakdowns_by_role_browser_and_system(app):
    report = _report(app)

    roles = {row["role"]: row for row in report.table("roles").rows}
    browsers = {row["browser"]: row for row in report.table("browsers").rows}
    systems = {row["os"]: row for row in report.table("systems").rows}

    assert roles["patient"]["people"] == 2 and roles["patient"]["poor_share"] == 0.4
    assert browsers["Safari"]["relayed_share"] == 1 and browsers["Chrome"]["people"] == 2
    assert browsers["Chrome"]["poor_share"] == 0
    assert set(systems) == {"Android", "Windows", "iOS"}
    assert systems["iOS"]["rtt_ms"] == 400


def test_the_day_rollups_and_the_per_person_rollups_agree(app):
    # A department filter reads each person's rollup; no filter reads the day rollups.
    every = _report(app)
    department = _report(app, department="Family Medicine")

    for key in ("summary", "rtt", "jitter", "loss", "bitrate", "mos", "roles", "browsers",
                "systems", "worst"):
        assert department.table(key).rows == every.table(key).rows, key


def test_summaries_rebuilt_from_the_rollups_give_the_same_report(app):
    before = _report(app)
    with app.app_context():
        rebuild_summaries()

    after = _report(app)

    for table in before.tables:
        assert after.table(table.key).rows == table.rows, table.key


def test_rollups_summed_from_bulk_samples_give_the_same_report(app):
    before = _report(app)
    with app.app_context():
        for model in (CallQualityRollup, CallQualityDay, CallQualityVisit):
            db.session.execute(sa.delete(model))
        db.session.commit()
        people = rollups_from_samples()
        again = rollups_from_samples()

    after = _report(app)

    assert (people, again) == (5, 0)
    for table in before.tables:
        assert after.table(table.key).rows == table.rows, table.key


def test_the_worst_visits_come_first_and_the_range_and_filters_narrow(app):
    visits = app.config["visits"]
    month_ago = (utcnow() - timedelta(days=30)).date()

    worst = _report(app).table("worst").rows
    old = _report(app, **{"from": str(month_ago - timedelta(days=1)),
                          "to": str(month_ago + timedelta(days=1))}).table("summary").rows[0]
    provider = _report(app, provider="Practitioner/good-dr").table("worst").rows
    department = _report(app, department="Cardiology").table("summary").rows[0]

    assert [row["visit"] for row in worst] == [visits["bad"], visits["good"]]
    assert worst[0]["relayed"] == "yes" and worst[0]["poor_share"] == 1
    assert worst[0]["ehr_appointment_id"] == "bad"
    assert (old["visits"], old["people"]) == (1, 1)
    assert [row["visit"] for row in provider] == [visits["good"]]
    assert department["visits"] == 0 and department["mos"] is None


def test_the_visit_timeline_has_joins_admit_minutes_and_disconnects(app):
    client = sign_in(app.test_client(), "ann")
    visit = app.config["visits"]["bad"]
    with app.test_request_context():
        timeline = quality.visit_timeline(visit)

    page = client.get(f"{PATH}/visits/{visit}")
    missing = client.get(f"{PATH}/visits/999999")

    assert [(e.person, e.kind) for e in timeline.events] == [
        ("patient", "joined"), ("patient", "waiting"), ("patient", "admitted"),
        ("patient", "disconnected")]
    assert {(m.person, m.samples) for m in timeline.minutes} <= {
        ("patient", 1), ("patient", 2), ("provider", 1), ("provider", 2)}
    assert sum(m.samples for m in timeline.minutes) == 4
    assert all(m.relayed and m.mos == 1.66 for m in timeline.minutes)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'data-testid="timeline-event"' in html and 'data-testid="timeline-minute"' in html
    assert "Dr. Quinn" not in html
    assert missing.status_code == 404


def test_the_page_links_the_worst_visits_and_the_csv_round_trips(app):
    client = sign_in(app.test_client(), "ann")
    visit = app.config["visits"]["bad"]

    page = client.get(PATH)
    worst = client.get(PATH + "?format=csv&table=worst")
    summary = client.get(PATH + "/export.csv?table=summary")

    assert page.status_code == 200
    assert f'href="{PATH}/visits/{visit}"' in page.get_data(as_text=True)
    rows = read_csv(worst.get_data(as_text=True))
    assert [int(row["visit"]) for row in rows][:1] == [visit]
    assert float(read_csv(summary.get_data(as_text=True))[0]["poor_share"]) == 0.4


def test_permissions_signed_out_and_unknown_endpoint(app):
    client = app.test_client()

    signed_out = client.get(PATH)
    timeline = client.get(f"{PATH}/visits/{app.config['visits']['bad']}")
    unknown = sign_in(app.test_client(), "ada").get(PATH + "?endpoint=nowhere")

    assert signed_out.status_code == 302 and "/admin/login" in signed_out.headers["Location"]
    assert timeline.status_code == 302 and "/admin/login" in timeline.headers["Location"]
    assert unknown.status_code == 400


def test_the_cli_prints_json_and_csv(app):
    runner = app.test_cli_runner()

    as_json = runner.invoke(args=["reports", "quality", "--json"])
    as_csv = runner.invoke(args=["reports", "quality", "--csv", "--table", "roles"])

    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["tables"]["summary"][0]["visits"] == 2
    assert {row["role"] for row in read_csv(as_csv.output)} == {"patient", "provider"}


def test_the_mean_rating_of_the_visits_when_ratings_are_recorded(app):
    ratings = pytest.importorskip("visits.ratings")
    ids = app.config["visits"]
    with app.app_context():
        db.session.add_all([
            ratings.VisitRating(appointment_id=ids["good"], participant_id=ids["good_patient"],
                                role="patient", score=5),
            ratings.VisitRating(appointment_id=ids["bad"], participant_id=ids["bad_patient"],
                                role="patient", score=2),
            ratings.VisitRating(appointment_id=ids["bad"], participant_id=ids["bad_provider"],
                                role="provider", score=2)])
        db.session.commit()

    report = _report(app)

    assert report.table("summary").rows[0]["rating"] == 3.0
    roles = {row["role"]: row["rating"] for row in report.table("roles").rows}
    assert roles == {"patient": 3.5, "provider": 2.0}


def test_the_purge_deletes_old_samples_and_keeps_recent_ones_and_the_sums(app):
    runner = app.test_cli_runner()
    with app.app_context():
        purged = purge_samples(utcnow(), 90)
        assert purged == 0
        db.session.execute(sa.update(CallQualitySample).where(
            CallQualitySample.at < utcnow() - timedelta(days=20))
            .values(at=utcnow() - timedelta(days=91)))
        db.session.commit()

    result = runner.invoke(args=["reports", "purge-quality-samples"])

    assert result.exit_code == 0, result.output
    assert "2" in result.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(CallQualitySample)) == 10
        assert db.session.scalar(sa.select(sa.func.count()).select_from(CallQualityRollup)) == 5


def test_the_periodic_purge_keeps_the_configured_days(app):
    app.config["QUALITY_RETENTION_DAYS"] = 20
    with app.app_context():
        retention.purge_old_samples()  # what each server process runs every hour

        ages = db.session.scalars(sa.select(CallQualitySample.at)).all()
    assert len(ages) == 10 and min(ages) > utcnow() - timedelta(days=1)
