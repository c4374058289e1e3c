"""/admin/reports/usage, its CSV and `flask reports usage`, on hand-made visits with known
answers, on SQLite and PostgreSQL. clinic-a (America/Chicago), Monday 2 and Tuesday 3
November 2026 (CST, UTC-6):

- V1 09:00 CST: completed. The patient (SMS link, Spanish) passed the device test, waited
  10 min (entered 08:55, admitted 09:05: 5 min late) and the visit lasted 20 min.
- V2 10:00: a no-show (the patient never connected); the provider came.
- V3 11:00: the patient (MyChart, English) failed the device test, waited and left; the
  provider (Practitioner/p2) never came.
- V4 12:00: cancelled.
- V5 Tuesday 09:00: completed; the patient (SMS) waited 2 min, admitted on time, 30 min.
- V6 Tuesday 23:30 CST (Wednesday 05:30 UTC): a no-show with no provider at all.
- clinic-b (UTC) has one completed visit on Monday, outside every clinic-a filter.
"""
from __future__ import annotations

import json
from bisect import bisect_right
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from admin.models import AdminRole
from device_test.models import DeviceTestResult
from ehr.services import ensure_endpoint
from extensions import db
from reports import framework, usage, usage_sums
from reports.models import MEASURE_EDGES, UsageFactsState, UsageVisitFacts
from tests.admin_helpers import create_account, sign_in
from tests.conftest import build_app, dispose_app
from visits.models import Appointment, LobbyEntry, Participant, utcnow

PATH = "/admin/reports/usage"
RANGE = "from=2026-11-02&to=2026-11-03"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


def _visit(endpoint_id, n, start, *, status="booked", department="Cardiology", ended=None,
           provider=None, provider_presence="connected", patient_presence="never",
           route=None, language=None, entered=None, admitted=None, left=None, test=None):
    appointment = Appointment(endpoint_id=endpoint_id, ehr_appointment_id=f"appt-{n}",
                              start_at=start, end_at=start + timedelta(minutes=30),
                              timezone="America/Chicago", department_display=department,
                              status=status, ended_at=ended)
    if provider:
        ehr_id, name = provider
        appointment.participants.append(Participant(
            role="provider", ehr_user_id=ehr_id, display_name=name, presence=provider_presence))
    patient = Participant(role="patient", ehr_user_id=f"Patient/{n}", presence=patient_presence,
                          join_route=route, language=language, admitted_at=admitted)
    appointment.participants.append(patient)
    if entered:
        patient.lobby_entries.append(LobbyEntry(entered_at=entered, admitted_at=admitted,
                                                left_at=left))
    db.session.add(appointment)
    db.session.flush()
    if test:
        outcome, when = test
        db.session.add(DeviceTestResult(appointment_id=appointment.id, participant_id=patient.id,
                                        created_at=when, overall=outcome, checks={}))


P1 = ("Practitioner/p1", "Dr. Ada Lovelace")
P2 = ("Practitioner/p2", "Dr. Bo Diddley")


def seed(application) -> None:
    with application.app_context():
        a = ensure_endpoint("clinic-a", "https://a.example.org/fhir", client_id="vv",
                            scopes="launch", approved_by="t", site_timezone="America/Chicago")
        b = ensure_endpoint("clinic-b", "https://b.example.org/fhir", client_id="vv",
                            scopes="launch", approved_by="t", site_timezone="UTC")
        db.session.flush()
        _visit(a.id, 1, at(2, 15), provider=P1, patient_presence="disconnected", route="sms",
               language="es", entered=at(2, 14, 55), admitted=at(2, 15, 5),
               ended=at(2, 15, 25), status="fulfilled", test=("pass", at(2, 14, 50)))
        _visit(a.id, 2, at(2, 16), provider=P1)
        _visit(a.id, 3, at(2, 17), provider=P2, provider_presence="never", department="Dermatology",
               patient_presence="disconnected", route="mychart", language="en",
               entered=at(2, 17), left=at(2, 17, 20), test=("fail", at(2, 16, 55)))
        _visit(a.id, 4, at(2, 18), provider=P1, status="cancelled")
        _visit(a.id, 5, at(3, 15), provider=P1, patient_presence="disconnected", route="sms",
               entered=at(3, 14, 58), admitted=at(3, 15), ended=at(3, 15, 30), status="fulfilled")
        _visit(a.id, 6, at(4, 5, 30), department=None)
        _visit(b.id, 7, at(2, 15), provider=P1, patient_presence="disconnected", route="sms",
               entered=at(2, 15), admitted=at(2, 15, 1), ended=at(2, 15, 11), status="fulfilled")
        db.session.commit()


@pytest.fixture
def app(tmp_path, monkeypatch, database_url):
    application = build_app(tmp_path, monkeypatch, SANDBOX=False, DATABASE_URL=database_url)
    seed(application)
    create_account(application, "ada", "admin")
    create_account(application, "ann", "analyst")
    yield application
    dispose_app(application)


def _csv(client, query: str, table: str | None = None) -> list[dict[str, str]]:
    response = client.get(f"{PATH}/export.csv?{query}" + (f"&table={table}" if table else ""))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/csv"
    return framework.read_csv(response.get_data(as_text=True))


def test_the_counts_and_times_are_the_known_answers(app):
    client = sign_in(app.test_client(), "ann")

    days = {row["period"]: row for row in _csv(client, RANGE + "&endpoint=clinic-a")}
    endpoint = _csv(client, RANGE + "&endpoint=clinic-a", "endpoints")

    assert list(days) == ["2026-11-02", "2026-11-03"]
    monday, tuesday = days["2026-11-02"], days["2026-11-03"]
    assert (monday["scheduled"], monday["started"], monday["completed"]) == ("3", "1", "1")
    assert (monday["no_shows"], monday["left_before_admitted"],
            monday["provider_never_joined"]) == ("1", "1", "1")
    assert (monday["wait_median_seconds"], monday["duration_median_seconds"]) == ("600.0",
                                                                                  "1200.0")
    assert (tuesday["scheduled"], tuesday["completed"], tuesday["no_shows"],
            tuesday["provider_never_joined"]) == ("2", "1", "1", "1")
    [a] = endpoint
    assert a["endpoint"] == "clinic-a"
    assert (a["scheduled"], a["started"], a["completed"], a["no_shows"],
            a["left_before_admitted"], a["provider_never_joined"]) == ("5", "2", "2", "2", "1", "2")
    assert (float(a["wait_median_seconds"]), float(a["wait_p90_seconds"])) == (360, 552)
    assert (float(a["duration_median_seconds"]), float(a["duration_p90_seconds"])) == (1500, 1740)
    assert (float(a["lateness_median_seconds"]), float(a["lateness_p90_seconds"])) == (150, 270)
    assert float(a["device_tested_share"]) == pytest.approx(2 / 3, abs=1e-4)
    assert float(a["device_pass_rate"]) == 0.5


def test_routes_languages_providers_and_the_wait_histogram(app):
    client = sign_in(app.test_client(), "ann")
    query = RANGE + "&endpoint=clinic-a"

    routes = {row["route"]: row["patients"] for row in _csv(client, query, "join_routes")}
    languages = {row["code"]: row["patients"] for row in _csv(client, query, "languages")}
    providers = {row["provider"]: row for row in _csv(client, query, "providers")}
    waits = {row["wait"]: row["patients"] for row in _csv(client, query, "wait_histogram")}

    assert routes == {"SMS link": "2", "MyChart": "1", "Guest link": "0"}
    assert languages == {"es": "1", "en": "1", "": "1"}
    assert providers["Practitioner/p1"]["provider_name"] == "Dr. Ada Lovelace"
    assert providers["Practitioner/p1"]["scheduled"] == "3"  # V1, V2, V5 (V4 was cancelled)
    assert providers["Practitioner/p1"]["completed"] == "2"
    assert providers["Practitioner/p2"]["provider_never_joined"] == "1"
    assert waits["2–5 min"] == "1" and waits["10–15 min"] == "1"
    assert sum(int(n) for n in waits.values()) == 2


def test_filters_narrow_by_department_provider_week_and_the_clinic_day(app):
    client = sign_in(app.test_client(), "ann")

    dermatology = _csv(client, RANGE + "&department=Dermatology", "endpoints")
    p2 = _csv(client, RANGE + "&provider=Practitioner/p2", "endpoints")
    weeks = _csv(client, RANGE + "&endpoint=clinic-a&period=week")
    monday_only = _csv(client, "from=2026-11-02&to=2026-11-02&endpoint=clinic-a", "endpoints")
    both = {row["endpoint"]: row for row in _csv(client, RANGE, "endpoints")}

    assert [(r["endpoint"], r["scheduled"]) for r in dermatology] == [("clinic-a", "1")]
    assert [(r["endpoint"], r["left_before_admitted"]) for r in p2] == [("clinic-a", "1")]
    assert [(r["period"], r["scheduled"]) for r in weeks] == [("2026-11-02", "5")]
    # V6 starts on Wednesday in UTC but on Tuesday in Chicago: not a Monday visit.
    assert monday_only[0]["scheduled"] == "3"
    assert both["clinic-b"]["completed"] == "1" and both["clinic-a"]["scheduled"] == "5"


def test_the_page_shows_the_figures_a_chart_and_the_csv_links(app):
    client = sign_in(app.test_client(), "ann")

    html = client.get(f"{PATH}?{RANGE}&endpoint=clinic-a").get_data(as_text=True)

    assert 'data-testid="report-periods"' in html
    assert 'data-key="2026-11-02"' in html
    assert '<svg viewBox="0 0 360' in html and 'role="img"' in html
    assert 'data-testid="chart-wait"' in html
    assert 'data-testid="report-csv-providers"' in html
    assert "Dr. Ada Lovelace" in html
    assert "Patient/" not in html


def test_csv_round_trip_matches_the_json_of_the_cli(app):
    client = sign_in(app.test_client(), "ada")
    runner = app.test_cli_runner()

    result = runner.invoke(args=["reports", "usage", "--from", "2026-11-02", "--to",
                                 "2026-11-03", "--endpoint", "clinic-a", "--json"])
    as_csv = runner.invoke(args=["reports", "usage", "--from", "2026-11-02", "--to",
                                 "2026-11-03", "--endpoint", "clinic-a", "--csv",
                                 "--table", "endpoints"])
    page_csv = _csv(client, RANGE + "&endpoint=clinic-a", "endpoints")

    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["filters"]["endpoint"] == "clinic-a"
    [row] = data["tables"]["endpoints"]
    assert as_csv.exit_code == 0, as_csv.output
    assert framework.read_csv(as_csv.output) == page_csv
    for key, value in page_csv[0].items():
        expected = row[key]
        assert value == ("" if expected is None else str(expected)), key


@pytest.mark.parametrize("query", ["endpoint=nope", "from=yesterday",
                                   "from=2026-12-05&to=2026-12-01", "period=month"])
def test_unusable_filters_get_400_with_a_message(app, query):
    client = sign_in(app.test_client(), "ann")

    page = client.get(f"{PATH}?{query}")
    download = client.get(f"{PATH}/export.csv?{query}")

    assert page.status_code == 400
    assert 'data-testid="report-error"' in page.get_data(as_text=True)
    assert download.status_code == 400


def test_the_cli_refuses_an_unknown_endpoint(app):
    result = app.test_cli_runner().invoke(args=["reports", "usage", "--endpoint", "nope",
                                                "--json"])

    assert result.exit_code == 2
    assert "nope" in result.output


def test_signed_out_visitors_are_sent_to_sign_in(app):
    for path in (PATH, f"{PATH}/export.csv", "/admin/reports/"):
        response = app.test_client().get(path)

        assert response.status_code == 302
        assert response.headers["Location"].split("?")[0].endswith("/admin/login")


def test_analysts_and_admins_may_read_it_and_find_it(app):
    view = app.view_functions["admin.reports.report"]

    for name in ("ada", "ann"):
        client = sign_in(app.test_client(), name)
        assert client.get(PATH).status_code == 200
        assert client.get("/admin/reports/").status_code == 200
    home = sign_in(app.test_client(), "ann").get("/admin/").get_data(as_text=True)
    assert set(view.admin_roles) == {AdminRole.ADMIN, AdminRole.ANALYST}
    assert 'data-testid="admin-nav-reports"' in home
    assert 'data-testid="home-report-usage"' in home
    assert sign_in(app.test_client(), "ann").get("/admin/reports/nope").status_code == 404


def test_settled_visits_kept_as_facts_give_the_same_answers(app):
    client = sign_in(app.test_client(), "ann")
    tables = ("periods", "endpoints", "providers", "departments", "join_routes", "languages",
              "wait_histogram", "device_test", "times")
    live = {table: _csv(client, RANGE, table) for table in tables}

    with app.app_context():
        added = usage.refresh_facts(utcnow())
        again = usage.refresh_facts(utcnow())
        kept = db.session.execute(sa.select(sa.func.count()).select_from(
            UsageVisitFacts)).scalar()
    stored = {table: _csv(client, RANGE, table) for table in tables}

    assert (added, again, kept) == (7, 0, 7)
    assert stored == live


def test_a_second_process_storing_the_same_facts_at_once_is_not_an_error(app):
    # Every server process refreshes at start-up; two can find the same visits, and the
    # first state row, missing at the same moment. The slower one's copies are skipped.
    facts, state = UsageVisitFacts.__table__, UsageFactsState.__table__
    with app.app_context():
        usage.refresh_facts(utcnow())
        rows = [dict(row._mapping) for row in db.session.execute(sa.select(facts))]
        db.session.execute(usage._insert_once(facts), rows)
        db.session.execute(usage._insert_once(state).values(id=1, settled_before=utcnow()))
        db.session.commit()
        kept = db.session.execute(sa.select(sa.func.count()).select_from(facts)).scalar()

    assert len(rows) == kept == 7


def test_a_second_provider_finds_the_visit_before_and_after_it_settles(app):
    client = sign_in(app.test_client(), "ann")
    with app.app_context():
        visit = db.session.execute(sa.select(Appointment).where(
            Appointment.ehr_appointment_id == "appt-2")).scalar_one()
        visit.participants.append(Participant(role="provider", ehr_user_id="Practitioner/p9",
                                              display_name="Dr. Second", presence="connected"))
        db.session.commit()
    query = RANGE + "&provider=Practitioner/p9"
    live = _csv(client, query, "endpoints")

    with app.app_context():
        usage.refresh_facts(utcnow())
    settled = _csv(client, query, "endpoints")

    assert [(row["endpoint"], row["scheduled"]) for row in live] == [("clinic-a", "1")]
    assert settled == live


def test_a_visit_is_kept_only_once_settled(app):
    with app.app_context():
        before = usage.refresh_facts(at(3, 12))  # two days after Monday 1 November noon UTC
        kept = set(db.session.execute(sa.select(UsageVisitFacts.appointment_id)).scalars())

    assert before == 0 and kept == set()


def test_sample_data_is_refused_in_production(app):
    from reports import sample_data

    assert sample_data.refusal({"ENV": "production"}) is not None
    assert sample_data.refusal({"ENV": "development", "SANDBOX": True}) is None


def test_sample_data_fills_every_table_and_the_report_reads_it(app):
    runner = app.test_cli_runner()

    done = runner.invoke(args=["reports", "sample-data", "--visits", "300", "--days", "20",
                               "--samples-per-visit", "4"])
    # The sample visits fall on the last 20 days, whatever today is.
    today = datetime.now(UTC).date()
    dates = ["--from", (today - timedelta(days=30)).isoformat(),
             "--to", (today + timedelta(days=1)).isoformat()]
    report = runner.invoke(args=["reports", "usage", *dates, "--json"])
    calls = runner.invoke(args=["reports", "quality", *dates, "--json"])

    assert done.exit_code == 0, done.output
    assert "Added 300 visits, 600 participants" in done.output
    assert report.exit_code == 0, report.output
    endpoints = json.loads(report.output)["tables"]["endpoints"]
    assert sum(row["scheduled"] for row in endpoints) > 0
    # Its call-quality samples reach the quality report (summed into its rollups).
    assert calls.exit_code == 0, calls.output
    summary = json.loads(calls.output)["tables"]["summary"]
    assert summary and summary[0]["visits"] > 0
    with app.app_context():
        assert db.session.execute(sa.select(sa.func.count()).select_from(
            Appointment)).scalar() == 307
        # Each table's ids were chosen by the generator; new rows still get fresh ones.
        db.session.add(Appointment(endpoint_id=1, ehr_appointment_id="after-sample",
                                   start_at=at(20, 15), end_at=at(20, 16), timezone="UTC"))
        db.session.commit()


def test_the_health_report_refuses_an_unknown_endpoint_too(app):
    client = sign_in(app.test_client(), "ann")

    response = client.get("/admin/reports/health?endpoint=nope")

    assert response.status_code == 400
    assert 'data-testid="health-error"' in response.get_data(as_text=True)


def test_a_visit_added_after_its_day_settled_is_kept_at_the_next_refresh(app):
    with app.app_context():
        usage.refresh_facts(utcnow())
        endpoint_id = db.session.execute(sa.select(Appointment.endpoint_id)).scalars().first()
        _visit(endpoint_id, 8, at(2, 19), provider=P1)  # booked late, for last month
        db.session.commit()
        added = usage.refresh_facts(utcnow())

    assert added == 1


def test_the_live_query_reads_participants_lobby_and_tests_through_indexes(app):
    """SQLite's plan for the per-visit query: appointments by endpoint and start, and every
    child table by an index, never scanned."""
    captured: list[tuple[str, object]] = []
    with app.test_request_context():
        if db.engine.dialect.name != "sqlite":
            pytest.skip("SQLite's plan only; PostgreSQL adds up in one statement")

        def grab(_conn, _cursor, statement, params, _context, _many):
            captured.append((statement, params))

        sa.event.listen(db.engine, "before_cursor_execute", grab)
        try:
            usage.build(framework.Filters.parse({"from": "2026-11-02", "to": "2026-11-03"},
                                                utcnow()), utcnow())
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", grab)
        plans = []
        with db.engine.connect() as connection:
            for statement, params in captured:
                if "lobby_entries" in statement:
                    plans += [row[-1] for row in connection.exec_driver_sql(
                        "EXPLAIN QUERY PLAN " + statement, params)]

    assert plans
    big = ("participants", "lobby_entries", "device_test_results", "appointments")
    assert [line for line in plans if line.startswith("SCAN") and any(
        f" {table}" in line or line.endswith(table) for table in big)] == []
    assert any("ix_appointments_endpoint_id_start_at" in line for line in plans)


def test_the_sample_data_command_refuses_production(tmp_path, monkeypatch):
    application = build_app(tmp_path, monkeypatch, SANDBOX=False, ENV="production",
                            PUBLIC_BASE_URL="https://visits.example.org")
    try:
        result = application.test_cli_runner().invoke(
            args=["reports", "sample-data", "--visits", "10"])

        assert result.exit_code == 1
        assert "refusing to add sample data in production" in result.output
        with application.app_context():
            assert db.session.execute(sa.select(sa.func.count()).select_from(
                Appointment)).scalar() == 0
    finally:
        dispose_app(application)


def test_many_providers_fold_behind_show_more_on_the_page_but_not_in_the_csv(app):
    with app.app_context():
        endpoint_id = db.session.execute(sa.text(
            "SELECT id FROM ehr_endpoints WHERE name = 'clinic-a'")).scalar()
        for n in range(30):
            _visit(endpoint_id, 100 + n, at(3, 9) + timedelta(minutes=n),
                   provider=(f"Practitioner/many-{n:02d}", f"Dr. Many {n:02d}"))
        db.session.commit()
    client = sign_in(app.test_client(), "ann")

    html = client.get(f"{PATH}?{RANGE}&endpoint=clinic-a").get_data(as_text=True)
    rows = _csv(client, f"{RANGE}&endpoint=clinic-a", "providers")

    shown = html.split('data-testid="report-providers"', 1)[1].split("</table>", 1)[0]
    folded = html.split('data-testid="report-more-providers"', 1)[1].split("</details>", 1)[0]
    assert shown.count('data-testid="report-row"') == usage.FOLD_AFTER
    # P1, P2, the visit with none and the 30 others: the rest behind one "show more".
    assert folded.count('data-testid="report-row"') == 33 - usage.FOLD_AFTER
    assert "Show the other 8 rows" in folded
    assert len(rows) == 33


def test_dates_read_as_the_reader_writes_them_on_the_page_and_iso_in_the_csv(app):
    client = sign_in(app.test_client(), "ann")

    english = client.get(f"{PATH}?{RANGE}&endpoint=clinic-a&lang=en").get_data(as_text=True)
    spanish = client.get(f"{PATH}?{RANGE}&endpoint=clinic-a&lang=es").get_data(as_text=True)
    rows = _csv(client, f"{RANGE}&endpoint=clinic-a", "periods")

    chart = english.split('data-testid="chart-visits"', 1)[1].split("</figure>", 1)[0]
    assert ">Nov 2, 2026</text>" in chart  # the bar's label, as the table writes it
    assert ">Nov 2, 2026</th>" in english
    assert ">2 nov 2026</th>" in spanish
    assert rows[0]["period"] == "2026-11-02"


# --- the settled visits' sums per clinic day (reports/usage_sums.py) ---------------------------

SUM_TABLES = ("periods", "endpoints", "providers", "departments", "join_routes", "languages",
              "wait_histogram", "device_test", "times")


def _all_tables(client, query: str) -> dict[str, list[dict[str, str]]]:
    return {table: _csv(client, query, table) for table in SUM_TABLES}


# The "times" table names its measure in a column; the other tables in the column's key.
_TIMES_ROWS = {"Lobby wait": "wait", "Visit duration": "duration",
               "Lateness (scheduled start to admission)": "lateness"}


def _bucket_width(row: dict[str, str], key: str, seconds: float) -> float:
    """The width of the sums' bucket that ``seconds`` in ``row[key]`` falls in."""
    edges = MEASURE_EDGES[_TIMES_ROWS.get(row.get("measure"), key.split("_")[0])]
    index = max(0, bisect_right(edges, seconds) - 1)
    return edges[index + 1] - edges[index] if index + 1 < len(edges) else float("inf")


def _assert_same_figures(from_sums, from_lines, bounds=None) -> None:
    """Every count and share the same; every time within the width of its bucket, or,
    given the estimates' ``bounds`` ((estimate, bound) as made), within its bound."""
    assert from_sums.keys() == from_lines.keys()
    for table, rows in from_lines.items():
        assert len(from_sums[table]) == len(rows), table
        for got, expected in zip(from_sums[table], rows):
            assert got.keys() == expected.keys()
            for key, value in expected.items():
                if key.endswith("_seconds") and value:
                    off = abs(float(got[key]) - float(value))
                    allowed = _bucket_width(expected, key, float(value)) if bounds is None \
                        else max(bound for found, bound in bounds
                                 if abs(found - float(got[key])) < 0.01)
                    assert off <= allowed + 1e-6, (table, key, got[key], value, allowed)
                else:
                    assert got[key] == value, (table, key, got, expected)


@pytest.mark.parametrize("query", [RANGE, RANGE + "&endpoint=clinic-a&period=week",
                                   RANGE + "&department=Cardiology"])
def test_the_daily_sums_give_the_counts_of_the_lines_and_their_times_closely(
        app, monkeypatch, query):
    client = sign_in(app.test_client(), "ann")
    exact = _all_tables(client, query)
    with app.app_context():
        # Settled up to Tuesday 00:00 UTC, 18:00 on Monday in Chicago: Monday's clinic day is
        # part summed, part read visit by visit (V4 at 18:00 UTC), Tuesday all visit by visit.
        usage.refresh_facts(at(5, 0))
        horizon = usage.sums_before()
    monkeypatch.setattr(usage_sums, "EXACT_UP_TO", 0)
    part_summed = _all_tables(client, query)
    page = client.get(f"{PATH}?{query}").get_data(as_text=True)
    with app.app_context():
        usage.refresh_facts(utcnow())
        usage.refresh_facts(utcnow())  # again: nothing is counted twice
    all_summed = _all_tables(client, query)

    assert horizon == at(3, 0)
    # Two values a group, or fewer, are exact; with three (waits of 60, 120 and 600 s for
    # both clinics) the middle one is placed in its bucket (120 to 150 s).
    _assert_same_figures(part_summed, exact)
    _assert_same_figures(all_summed, exact)
    assert "estimated from daily totals" in page


def test_a_short_range_stays_exact_and_says_nothing_of_estimates(app):
    client = sign_in(app.test_client(), "ann")
    with app.app_context():
        usage.refresh_facts(utcnow())

    page = client.get(f"{PATH}?{RANGE}").get_data(as_text=True)

    assert "estimated from daily totals" not in page


def test_a_visit_booked_late_for_a_summed_day_is_counted_at_the_next_refresh(app, monkeypatch):
    client = sign_in(app.test_client(), "ann")
    monkeypatch.setattr(usage_sums, "EXACT_UP_TO", 0)
    with app.app_context():
        usage.refresh_facts(utcnow())
    before = _csv(client, RANGE + "&endpoint=clinic-a")
    with app.app_context():
        endpoint_id = db.session.execute(sa.select(Appointment.endpoint_id).where(
            Appointment.ehr_appointment_id == "appt-1")).scalar_one()
        _visit(endpoint_id, 8, at(2, 19), provider=P1)  # Monday 13:00 CST, booked late
        db.session.commit()
        usage.refresh_facts(utcnow())
    after = _csv(client, RANGE + "&endpoint=clinic-a")

    assert [row["scheduled"] for row in before] == ["3", "2"]
    assert [row["scheduled"] for row in after] == ["4", "2"]


def test_sample_data_read_from_the_sums_matches_the_lines(app, monkeypatch):
    """A few thousand made-up visits: the sums' counts are the lines' counts, and their
    medians and 90th percentiles are within the buckets of the values they lie between
    (for a small group, such as one provider's eight visits, those may be buckets apart:
    ``usage_sums.estimate_bound``)."""
    runner = app.test_cli_runner()
    done = runner.invoke(args=["reports", "sample-data", "--visits", "3000", "--days", "30",
                               "--samples-per-visit", "1"])
    assert done.exit_code == 0, done.output
    today = datetime.now(UTC).date()
    query = f"from={today - timedelta(days=29)}&to={today}"
    client = sign_in(app.test_client(), "ann")
    exact = _all_tables(client, query)
    monkeypatch.setattr(usage_sums, "EXACT_UP_TO", 0)
    # Each estimate the report makes, with how far it may be off.
    bounds: list[tuple[float, float]] = []
    estimate = usage_sums.estimate

    def estimate_and_bound(sums, measure, share):
        found = estimate(sums, measure, share)
        if found is not None:
            bounds.append((found, usage_sums.estimate_bound(sums, measure, share)))
        return found

    monkeypatch.setattr(usage_sums, "estimate", estimate_and_bound)

    summed = _all_tables(client, query)

    assert sum(int(row["scheduled"]) for row in exact["endpoints"]) > 2000
    _assert_same_figures(summed, exact, bounds)


def test_the_late_booking_check_reads_only_appointments_added_since_the_last(app):
    with app.app_context():
        usage.refresh_facts(utcnow())
        # Booked just now: a later transaction might still commit a lower id, so not passed.
        first = db.session.execute(sa.select(UsageFactsState.stragglers_checked_through)
                                   ).scalar()
        db.session.execute(sa.update(Appointment).values(
            created_at=utcnow() - timedelta(hours=2)))
        db.session.commit()
        usage.refresh_facts(utcnow())
        checked = db.session.execute(sa.select(UsageFactsState.stragglers_checked_through)
                                     ).scalar()
        newest = db.session.execute(sa.select(sa.func.max(Appointment.id))).scalar()
        endpoint_id = db.session.execute(sa.select(Appointment.endpoint_id)).scalars().first()
        _visit(endpoint_id, 8, at(2, 19), provider=P1)  # booked late, for last month
        db.session.commit()
        added = usage.refresh_facts(utcnow())

    assert first is None and checked == newest
    assert added == 1
