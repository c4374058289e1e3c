"""Time the call-quality, texts and usage reports on PostgreSQL at scale: N visits
(default 1,000,000) over a year on 3 endpoints, a patient and a provider each with a
call-quality rollup (what 20 samples a person, 20,000,000 samples in all, sum to), 3 texts
a visit, and each settled visit's usage facts, summed per clinic day. Rows are made with
generate_series in a schema of their own, dropped afterwards.

    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/test \
        .venv/bin/python bench/reports_quality_sms.py [--visits 1000000]

Prints each report's time for a week, a month on one endpoint and department, a provider's
quarter, and a whole year (the longest range a report allows), then the year's whole page.
``--schema NAME`` fills that schema once and keeps it, so a second run times the same data.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import flask_migrate
import sqlalchemy as sa

from app import create_app
from ehr.services import ensure_endpoint
from extensions import db
from reports import quality, texts, usage
from reports.framework import Filters
from settings import sqlalchemy_url
from visits.models import utcnow

_BUCKETS = ", ".join(f"{m}_b{i}" for m in ("rtt", "jitter", "loss", "bitrate", "mos")
                     for i in range(5))
_SUMS = ", ".join(["samples", "poor", *(f"{m}_{p}" for m in ("rtt", "jitter", "loss", "bitrate",
                                                                "mos") for p in ("sum", "n")),
                   *(f"{m}_b{i}" for m in ("rtt", "jitter", "loss", "bitrate", "mos")
                     for i in range(5))])
_SUM_OF = ", ".join(f"sum({name})" for name in _SUMS.split(", "))
_BUCKET_VALUES = ", ".join(
    f"CASE WHEN p.id % 5 = {i} THEN 20 ELSE 0 END"
    for _m in ("rtt", "jitter", "loss", "bitrate", "mos") for i in range(5))


# The rows each report needs, beyond appointments and participants.
_NEEDS = {"quality": ("call_quality_rollups", "call_quality_days", "call_quality_visits"),
          "sms": ("sms_messages",), "usage": ("usage_visit_facts", "usage_facts_state")}


def fill(visits: int, reports: tuple[str, ...] = ("usage", "quality", "sms")) -> None:
    for n in range(3):
        ensure_endpoint(f"bench-{n}", f"https://ehr{n}.example.org/fhir", client_id="vv",
                        scopes="launch", approved_by="bench", site_timezone="America/Chicago")
    db.session.commit()
    ids = db.session.execute(sa.text("SELECT min(id) FROM ehr_endpoints")).scalar()
    steps = [
        ("appointments", f"""
         INSERT INTO appointments (endpoint_id, ehr_appointment_id, start_at, end_at, timezone,
             department_display, status, created_at, updated_at)
         SELECT {ids} + g % 3, 'bench-' || g,
                now() - (g % 365) * interval '1 day' + (g % 600) * interval '1 minute',
                now() - (g % 365) * interval '1 day' + (g % 600 + 30) * interval '1 minute',
                'America/Chicago', 'Dept ' || (g % 12), 'fulfilled', now(), now()
         FROM generate_series(1, {visits}) g"""),
        ("participants", """
         INSERT INTO participants (appointment_id, role, ehr_user_id, display_name, created_at)
         SELECT a.id, r.role,
                CASE r.role WHEN 'provider' THEN 'Practitioner/p' || (a.id % 300)
                            ELSE 'Patient/' || a.id END,
                CASE r.role WHEN 'provider' THEN 'Dr ' || (a.id % 300) END, now()
         FROM appointments a CROSS JOIN (VALUES ('patient'), ('provider')) AS r(role)"""),
        ("call_quality_rollups", f"""
         INSERT INTO call_quality_rollups (participant_id, appointment_id, endpoint_id, role,
             browser_family, os_family, first_at, day, last_at, samples, poor, relayed,
             rtt_sum, rtt_n, jitter_sum, jitter_n, loss_sum, loss_n, bitrate_sum, bitrate_n,
             mos_sum, mos_n, {_BUCKETS})
         SELECT p.id, a.id, a.endpoint_id, p.role,
                (ARRAY['Chrome', 'Safari', 'Firefox', 'Edge'])[1 + p.id % 4],
                (ARRAY['Windows', 'iOS', 'Android', 'macOS'])[1 + p.id % 4],
                a.start_at, (a.start_at AT TIME ZONE 'America/Chicago')::date,
                a.start_at + interval '200 seconds', 20, p.id % 7, p.id % 3,
                20 * (50 + p.id % 400), 20, 20 * (p.id % 40), 20, 20 * (p.id % 9), 20,
                20 * (100 + p.id % 1500), 20, 20 * (1.5 + (p.id % 29) / 10.0), 20,
                {_BUCKET_VALUES}
         FROM participants p JOIN appointments a ON a.id = p.appointment_id"""),
        ("call_quality_days", f"""
         INSERT INTO call_quality_days (endpoint_id, day, role, browser_family, os_family,
             people, relayed_people, {_SUMS})
         SELECT endpoint_id, day, role, browser_family, os_family, count(*),
                count(*) FILTER (WHERE relayed > 0), {_SUM_OF}
         FROM call_quality_rollups GROUP BY endpoint_id, day, role, browser_family, os_family"""),
        ("call_quality_visits", """
         INSERT INTO call_quality_visits (appointment_id, endpoint_id, day, first_at, people,
             relayed, samples, poor, rtt_sum, rtt_n, loss_sum, loss_n, mos_sum, mos_n, mos_mean)
         SELECT appointment_id, min(endpoint_id), min(day), min(first_at), count(*),
                count(*) FILTER (WHERE relayed > 0), sum(samples), sum(poor), sum(rtt_sum),
                sum(rtt_n), sum(loss_sum), sum(loss_n), sum(mos_sum), sum(mos_n),
                sum(mos_sum) / nullif(sum(mos_n), 0)
         FROM call_quality_rollups GROUP BY appointment_id"""),
        ("sms_messages", """
         INSERT INTO sms_messages (appointment_id, participant_id, kind, language, scheduled_for,
             status, error_code, error_message, attempts, created_at)
         SELECT a.id, NULL, k.kind, 'en', a.start_at - k.ahead,
                (ARRAY['delivered', 'delivered', 'delivered', 'sent', 'failed', 'suppressed'])
                    [1 + (a.id + k.n) % 6],
                CASE WHEN (a.id + k.n) % 6 = 4 THEN '30003' END,
                CASE WHEN (a.id + k.n) % 6 = 4 THEN 'Twilio reported undelivered (error 30003)'
                     WHEN (a.id + k.n) % 6 = 5 THEN 'landline' END, 1, now()
         FROM appointments a CROSS JOIN (VALUES ('confirmation', interval '3 days', 0),
             ('reminder', interval '1 day', 1), ('reminder', interval '1 hour', 2))
             AS k(kind, ahead, n)"""),
        # What reports.usage.refresh_facts keeps of each settled visit: 5 % cancelled, 8 %
        # no-shows, waits of 0-15 min, visits of 10-30 min, lateness -2..+8 min.
        ("usage_visit_facts", """
         INSERT INTO usage_visit_facts (appointment_id, endpoint_id, start_at, end_at,
             department, status, ended_at, patient_joined, admitted_at, lobby_entered_at,
             provider_joined, provider_ehr_id, provider_name, join_route, language,
             device_test)
         SELECT a.id, a.endpoint_id, a.start_at, a.end_at, a.department_display,
                CASE WHEN a.id % 20 = 0 THEN 'cancelled' ELSE 'fulfilled' END,
                CASE WHEN a.id % 13 <> 0 THEN a.start_at + (a.id % 600 - 120 + 600
                     + a.id % 1200) * interval '1 second' END,
                a.id % 13 <> 0 OR a.id % 7 = 0,
                CASE WHEN a.id % 13 <> 0 THEN a.start_at + (a.id % 600 - 120)
                     * interval '1 second' END,
                CASE WHEN a.id % 13 <> 0 THEN a.start_at + (a.id % 600 - 120 - a.id % 900)
                     * interval '1 second' END,
                a.id % 50 <> 0, 'Practitioner/p' || (a.id % 300), 'Dr ' || (a.id % 300),
                (ARRAY['sms', 'mychart', 'guest'])[1 + a.id % 3],
                (ARRAY['en', 'es', 'pt-BR', 'en'])[1 + a.id % 4],
                (ARRAY['pass', 'warn', 'fail', NULL, NULL])[1 + a.id % 5]
         FROM appointments a WHERE a.start_at < now() - interval '2 days'"""),
        ("usage_facts_state", """
         INSERT INTO usage_facts_state (id, settled_before)
         VALUES (1, now() - interval '2 days')"""),
    ]
    wanted = {"appointments", "participants"} | {t for r in reports for t in _NEEDS[r]}
    for table, statement in steps:
        if table not in wanted:
            continue
        started = time.perf_counter()
        db.session.execute(sa.text(statement))
        db.session.commit()
        print(f"  {table}: {time.perf_counter() - started:.1f} s", flush=True)
    db.session.execute(sa.text("ANALYZE"))
    db.session.commit()
    if "sms" in reports:
        started = time.perf_counter()
        days = texts.settle(utcnow())
        print(f"  texts settled: {days} days in {time.perf_counter() - started:.1f} s",
              flush=True)
        db.session.execute(sa.text("ANALYZE"))
        db.session.commit()


def timed(label: str, build, args: dict) -> None:
    now = utcnow()
    best = None
    for _ in range(3):
        started = time.perf_counter()
        build(Filters.parse(args, now), now)
        elapsed = time.perf_counter() - started
        best = elapsed if best is None else min(best, elapsed)
    print(f"{label:<44} {best * 1000:8.0f} ms", flush=True)


def timed_page(client, label: str, path: str) -> None:
    """The whole page as an analyst gets it (the report, its tables and charts drawn)."""
    best = None
    for _ in range(3):
        started = time.perf_counter()
        response = client.get(path)
        elapsed = time.perf_counter() - started
        assert response.status_code == 200, response.status_code
        best = elapsed if best is None else min(best, elapsed)
    print(f"{label:<44} {best * 1000:8.0f} ms", flush=True)


def _signed_in(app):
    """A test client signed in through the real form as an analyst made for the bench."""
    password = "bench analyst password"
    result = app.test_cli_runner().invoke(args=[
        "admin", "create-user", "bench-analyst", "--role", "analyst", "--password", password])
    client = app.test_client()
    form = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    response = client.post("/admin/login", data={
        "csrf_token": token.group(1), "username": "bench-analyst", "password": password})
    assert response.status_code == 302, (result.output, response.status_code)
    return client


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visits", type=int, default=1_000_000)
    parser.add_argument("--reports", default="usage,quality,sms",
                        help="which reports to fill for and time (comma-separated)")
    parser.add_argument("--schema", help="fill this schema once and keep it: a later run with "
                        "the same name times the same data again, without filling")
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql")):
        sys.exit("set DATABASE_URL to a PostgreSQL database")
    arguments = parser.parse_args()
    visits = arguments.visits
    reports = tuple(name for name in arguments.reports.split(",") if name)
    if not set(reports) <= set(_NEEDS):
        sys.exit(f"--reports: choose among {', '.join(_NEEDS)}")
    schema = arguments.schema or f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sqlalchemy_url(url), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        filled = connection.execute(sa.text(
            "SELECT to_regclass(:table) IS NOT NULL"), {"table": f'"{schema}".appointments'}
        ).scalar()
        connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        with tempfile.TemporaryDirectory() as folder:
            app = create_app({"DATABASE_URL": f"{url}{separator}options=-csearch_path%3D{schema}",
                              "INSTANCE_PATH": folder, "SECRET_KEY": "bench-" + "x" * 40,
                              "ASYNC_MODE": "threading", "LOG_LEVEL": "WARNING"})
            with app.test_request_context():
                flask_migrate.upgrade(directory=str(Path(__file__).resolve().parents[1]
                                                    / "migrations"))
                if filled:
                    print(f"timing the data already in schema {schema}", flush=True)
                else:
                    print(f"filling {visits} visits:", flush=True)
                    fill(visits, reports)
                if "usage" in reports:
                    started = time.perf_counter()
                    usage.refresh_facts(utcnow())
                    db.session.execute(sa.text("ANALYZE"))
                    db.session.commit()
                    print(f"  usage facts summed per day: "
                          f"{time.perf_counter() - started:.1f} s", flush=True)
                today = utcnow().date()
                week = {"from": str(today - timedelta(days=6)), "to": str(today)}
                month = {"from": str(today - timedelta(days=29)), "to": str(today),
                         "endpoint": "bench-1", "department": "Dept 4"}
                quarter = {"from": str(today - timedelta(days=89)), "to": str(today),
                           "provider": "Practitioner/p17"}
                year = {"from": str(today - timedelta(days=365)), "to": str(today)}
                builds = {"usage": usage.build, "quality": quality.build, "sms": texts.build}
                for name, build in ((name, builds[name]) for name in reports):
                    timed(f"{name}: a week, every endpoint", build, week)
                    timed(f"{name}: a month, one endpoint and department", build, month)
                    timed(f"{name}: a quarter, one provider", build, quarter)
                    timed(f"{name}: a year, every endpoint", build, year)
                client = _signed_in(app)
                for name in reports:
                    timed_page(client, f"{name}: a year, every endpoint, the page",
                               f"/admin/reports/{name}?from={year['from']}&to={year['to']}")
                db.session.remove()
                db.engine.dispose()
    finally:
        if not arguments.schema:
            with admin.connect() as connection:
                connection.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
