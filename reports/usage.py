"""The usage report: how many visits were scheduled, started and completed, who never came,
how long patients waited in the lobby, how long visits lasted, how late they began, whether
patients ran the device test first, and how they joined (SMS link, MyChart, guest link) in
which language. By day or week, endpoint, department and provider.

One SQL statement reads a line per visit in the range (``_facts``): the appointment's own
columns plus correlated subqueries over its participants, lobby entries and device tests,
each answered by an index (``ix_appointments_endpoint_id_start_at`` picks the visits;
participants by ``uq_participants_appointment_id_ehr_user_id``, lobby entries by
``ix_lobby_entries_participant_id``, device tests by ``ix_device_test_results_appointment_id``).
Counts, medians and the 90th percentile are then taken over those lines, so SQLite and
PostgreSQL give the same answers. A visit counts in the day of its scheduled start in its
endpoint's time zone.

What counts:
- scheduled: not cancelled; started: a patient was admitted; completed: started, and ended
  by the provider (or marked fulfilled by the EHR).
- no-show (the patient never connected), left before admitted (connected, never admitted)
  and provider never joined are counted once the visit is over (its scheduled end passed,
  or it was ended), so today's later visits are not counted as missed.
- lobby wait: from entering the lobby to being admitted (the patient's admitted wait);
  duration: from the patient's admission to the end of the visit; lateness: from the
  scheduled start to the admission (negative when early).
- device test: patients who connected and ran it for this visit before being admitted (or
  before the scheduled end if never admitted); passed: its best result was "pass".
- join route and language: the patient's, among patients who connected.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from babel import Locale, UnknownLocaleError
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from device_test.models import DeviceTestResult
from ehr.models import EhrEndpoint
from extensions import db
from ops.background import periodic
from reports import framework
from reports.framework import (
    Chart,
    Column,
    Filters,
    Report,
    Table,
    histogram,
    percentile,
)
from reports.models import UsageFactsState, UsageVisitFacts
from visits.models import (
    Appointment,
    AppointmentStatus,
    JoinRoute,
    LobbyEntry,
    Participant,
    ParticipantRole,
    PresenceState,
    utcnow,
)

# Lobby wait histogram buckets, in minutes: [0, 1), [1, 2), … [60, ∞).
WAIT_BUCKETS_MINUTES = (0, 1, 2, 5, 10, 15, 20, 30, 45, 60)


@dataclass(frozen=True)
class VisitFacts:
    """One visit as the report counts it (times aware UTC). The same fields are the columns
    of ``usage_visit_facts`` (reports/models.py), where settled visits are kept."""

    appointment_id: int
    endpoint_id: int
    start_at: datetime
    end_at: datetime
    department: str | None
    status: str
    ended_at: datetime | None
    patient_joined: bool
    admitted_at: datetime | None
    lobby_entered_at: datetime | None
    provider_joined: bool
    provider_ehr_id: str | None
    provider_name: str | None
    join_route: str | None
    language: str | None
    device_test: str | None  # the best result before admission: pass, warn, fail


FACT_COLUMNS = tuple(f.name for f in fields(VisitFacts))


@dataclass(frozen=True)
class Counted:
    """A visit's figures, worked out once per report (``metrics`` only adds them up)."""

    scheduled: bool
    started: bool
    completed: bool
    no_show: bool
    left_before_admitted: bool
    provider_never_joined: bool
    joined: bool
    tested: bool
    passed: bool
    wait: float | None
    duration: float | None
    lateness: float | None

    @classmethod
    def of(cls, visit: VisitFacts, now: datetime) -> Counted:
        scheduled = visit.status != AppointmentStatus.CANCELLED
        admitted = visit.admitted_at
        started = scheduled and admitted is not None
        completed = started and (visit.ended_at is not None
                                 or visit.status == AppointmentStatus.FULFILLED)
        over = scheduled and (visit.ended_at is not None or visit.end_at <= now)
        joined = scheduled and visit.patient_joined
        wait = duration = lateness = None
        if scheduled and admitted is not None:
            lateness = (admitted - visit.start_at).total_seconds()
            if visit.lobby_entered_at is not None:
                wait = max(0.0, (admitted - visit.lobby_entered_at).total_seconds())
            if completed and visit.ended_at is not None:
                duration = max(0.0, (visit.ended_at - admitted).total_seconds())
        return cls(scheduled, started, completed, over and not visit.patient_joined,
                   over and visit.patient_joined and admitted is None,
                   over and not visit.provider_joined, joined,
                   joined and visit.device_test is not None,
                   joined and visit.device_test == "pass", wait, duration, lateness)


def _aware(value) -> datetime | None:
    """Subquery aggregates lose the column type on SQLite: naive UTC text or datetimes."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _no_jit() -> None:
    """PostgreSQL's JIT compiles these queries for longer than they run (2 s of 3 s at
    20,000 visits): off for this transaction."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL jit = off"))


def _live_query():
    """Each visit's facts from its participants, lobby entries and device tests: a SELECT
    of correlated subqueries, each an index probe per visit."""
    a = Appointment.__table__
    patient = Participant.__table__.alias("patient")
    provider = Participant.__table__.alias("provider")
    entry = LobbyEntry.__table__
    test = DeviceTestResult.__table__

    def of_patients(*columns):
        return (sa.select(*columns).where(patient.c.appointment_id == a.c.id,
                                          patient.c.role == ParticipantRole.PATIENT)
                .scalar_subquery())

    joined = sa.exists().where(patient.c.appointment_id == a.c.id,
                               patient.c.role == ParticipantRole.PATIENT,
                               patient.c.presence != PresenceState.NEVER)
    provider_joined = sa.exists().where(provider.c.appointment_id == a.c.id,
                                        provider.c.role == ParticipantRole.PROVIDER,
                                        provider.c.presence != PresenceState.NEVER)
    first_provider = (sa.select(sa.func.min(provider.c.id))
                      .where(provider.c.appointment_id == a.c.id,
                             provider.c.role == ParticipantRole.PROVIDER).scalar_subquery())
    entered = (sa.select(sa.func.min(entry.c.entered_at))
               .select_from(entry.join(patient, entry.c.participant_id == patient.c.id))
               .where(patient.c.appointment_id == a.c.id,
                      patient.c.role == ParticipantRole.PATIENT,
                      entry.c.admitted_at.is_not(None)).scalar_subquery())
    # 2 pass, 1 warn, 0 fail: the best result run before the visit began for the patient.
    rank = sa.case((test.c.overall == "pass", 2), (test.c.overall == "warn", 1), else_=0)
    best_test = (sa.select(sa.func.max(rank))
                 .select_from(test.join(patient, test.c.participant_id == patient.c.id))
                 .where(test.c.appointment_id == a.c.id,
                        patient.c.role == ParticipantRole.PATIENT,
                        test.c.created_at <= sa.func.coalesce(patient.c.admitted_at, a.c.end_at))
                 .scalar_subquery())
    return a, provider, sa.select(
        a.c.id, a.c.endpoint_id, a.c.start_at, a.c.end_at, a.c.department_display, a.c.status,
        a.c.ended_at, joined.label("joined"),
        of_patients(sa.func.min(patient.c.admitted_at)).label("admitted_at"),
        entered.label("entered_at"), provider_joined.label("provider_joined"),
        first_provider.label("provider_id"),
        of_patients(sa.func.min(patient.c.join_route)).label("join_route"),
        of_patients(sa.func.min(patient.c.language)).label("language"),
        best_test.label("best_test"))


_TESTS = {2: "pass", 1: "warn", 0: "fail", None: None}


def _live_rows(query) -> list[VisitFacts]:
    rows = db.session.execute(query).all()
    providers = _providers(row.provider_id for row in rows)
    return [VisitFacts(
        row.id, row.endpoint_id, _aware(row.start_at), _aware(row.end_at),
        row.department_display, row.status, _aware(row.ended_at), bool(row.joined),
        _aware(row.admitted_at), _aware(row.entered_at), bool(row.provider_joined),
        *providers.get(row.provider_id, (None, None)), row.join_route, row.language,
        _TESTS[row.best_test]) for row in rows]


def _facts(filters: Filters) -> list[VisitFacts]:
    """A line per visit whose scheduled start is in the range (each endpoint's own days):
    settled visits from ``usage_visit_facts``, the rest worked out now."""
    if not filters.zones:
        return []
    _no_jit()
    settled = settled_before()
    a, provider, live = _live_query()
    stored = UsageVisitFacts.__table__
    found: list[VisitFacts] = []
    for zone, ids in filters.by_zone().items():
        start, stop = filters.bounds(zone)
        if settled is not None and start < settled:
            query = sa.select(*(stored.c[name] for name in FACT_COLUMNS)).where(
                stored.c.endpoint_id.in_(ids), stored.c.start_at >= start,
                stored.c.start_at < min(stop, settled))
            if filters.department:
                query = query.where(stored.c.department == filters.department)
            if filters.provider:
                query = query.where(stored.c.provider_ehr_id == filters.provider)
            found.extend(VisitFacts(*row) for row in db.session.execute(query))
            start = max(start, settled)
        if start >= stop:
            continue
        query = live.where(a.c.endpoint_id.in_(ids), a.c.start_at >= start, a.c.start_at < stop)
        if filters.department:
            query = query.where(a.c.department_display == filters.department)
        if filters.provider:
            query = query.where(sa.exists().where(provider.c.appointment_id == a.c.id,
                                                  provider.c.role == ParticipantRole.PROVIDER,
                                                  provider.c.ehr_user_id == filters.provider))
        found.extend(_live_rows(query))
    return found


def _providers(ids: Iterable[int]) -> dict[int, tuple[str | None, str | None]]:
    """Participant id -> (EHR user id, display name) of the visits' first providers."""
    wanted = sorted({i for i in ids if i is not None})
    found: dict[int, tuple[str | None, str | None]] = {}
    for start in range(0, len(wanted), 500):
        rows = db.session.execute(
            sa.select(Participant.id, Participant.ehr_user_id, Participant.display_name)
            .where(Participant.id.in_(wanted[start:start + 500])))
        found.update({row.id: (row.ehr_user_id, row.display_name) for row in rows})
    return found


# --- the settled visits' facts, kept -----------------------------------------------------------

# A visit is settled (its facts final) this long after its scheduled start: join links stop
# working two hours after the scheduled end by default, and no visit lasts a day.
SETTLE_AFTER = timedelta(days=2)
# How often each server process keeps the newly settled visits' facts.
REFRESH_INTERVAL_SECONDS = 600.0
_STRAGGLER_BATCH = 5_000


def settled_before() -> datetime | None:
    """Visits scheduled before this have their row in ``usage_visit_facts``."""
    return _aware(db.session.execute(
        sa.select(UsageFactsState.settled_before).where(UsageFactsState.id == 1)).scalar())


def refresh_facts(now: datetime) -> int:
    """Keep the facts of every visit settled by ``now`` that has none yet: those scheduled
    from the last refresh's horizon up to ``now - SETTLE_AFTER``, a day's visits per
    transaction (so SQLite's other writers wait for one day's rows at most), then any visit
    from before that horizon added since (``_add_stragglers``); returns how many rows were
    added. Several processes may run it at once: each day is added under a
    lock on the horizon row (PostgreSQL), and a repeated day replaces its rows."""
    horizon = now - SETTLE_AFTER
    a, _provider, live = _live_query()
    stored = UsageVisitFacts.__table__
    state = UsageFactsState.__table__
    added = 0
    while True:
        query = sa.select(state.c.settled_before).where(state.c.id == 1)
        if db.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        since = _aware(db.session.execute(query).scalar())
        first = since or _aware(db.session.execute(
            sa.select(sa.func.min(a.c.start_at))).scalar()) or horizon
        if since is not None and since >= horizon:
            db.session.rollback()
            return added + _add_stragglers(since)
        until = min(first + timedelta(days=1), horizon)
        _no_jit()
        rows = _live_rows(live.where(a.c.start_at >= first, a.c.start_at < until))
        if rows:
            db.session.execute(stored.delete().where(stored.c.start_at >= first,
                                                     stored.c.start_at < until))
            db.session.execute(stored.insert(), [
                {name: getattr(row, name) for name in FACT_COLUMNS} for row in rows])
        if since is None:
            db.session.execute(state.insert().values(id=1, settled_before=until))
        else:
            db.session.execute(state.update().where(state.c.id == 1)
                               .values(settled_before=until))
        db.session.commit()
        added += len(rows)


def _add_stragglers(since: datetime) -> int:
    """Visits scheduled before the horizon that were added after it passed them (an HL7
    booking entered late, sample data): one anti-join over the settled history."""
    a, _provider, live = _live_query()
    stored = UsageVisitFacts.__table__
    added = 0
    while True:
        missing = (sa.select(a.c.id).where(a.c.start_at < since, ~sa.exists().where(
            stored.c.appointment_id == a.c.id)).limit(_STRAGGLER_BATCH))
        _no_jit()
        rows = _live_rows(live.where(a.c.id.in_(missing)))
        if not rows:
            db.session.rollback()
            return added
        db.session.execute(stored.insert(), [
            {name: getattr(row, name) for name in FACT_COLUMNS} for row in rows])
        db.session.commit()
        added += len(rows)


@periodic(REFRESH_INTERVAL_SECONDS, name="reports.usage_facts")
def refresh_settled_visits() -> None:
    """The background refresh in each server process (cheap when nothing new settled)."""
    refresh_facts(utcnow())


# --- aggregation -----------------------------------------------------------------------------

COUNT_COLUMNS = (
    Column("scheduled", _l("Scheduled")),
    Column("started", _l("Started")),
    Column("completed", _l("Completed")),
    Column("no_shows", _l("No-shows")),
    Column("left_before_admitted", _l("Left before admitted")),
    Column("provider_never_joined", _l("Provider never joined")),
)
TIME_COLUMNS = (
    Column("wait_median_seconds", _l("Lobby wait, median"), "seconds"),
    Column("wait_p90_seconds", _l("Lobby wait, 90th percentile"), "seconds"),
    Column("duration_median_seconds", _l("Duration, median"), "seconds"),
    Column("duration_p90_seconds", _l("Duration, 90th percentile"), "seconds"),
    Column("lateness_median_seconds", _l("Lateness, median"), "seconds"),
    Column("lateness_p90_seconds", _l("Lateness, 90th percentile"), "seconds"),
)
DEVICE_COLUMNS = (
    Column("device_tested_share", _l("Ran the device test first"), "percent"),
    Column("device_pass_rate", _l("Device test pass rate"), "percent"),
)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def metrics(visits: list[Counted]) -> dict[str, object]:
    """Every figure of a group of visits: counts, wait/duration/lateness median and p90,
    device-test share and pass rate (``waits``: the lobby waits, for the histogram)."""
    waits = [v.wait for v in visits if v.wait is not None]
    durations = [v.duration for v in visits if v.duration is not None]
    lateness = [v.lateness for v in visits if v.lateness is not None]
    joined = sum(v.joined for v in visits)
    tested = sum(v.tested for v in visits)
    passed = sum(v.passed for v in visits)
    return {
        "scheduled": sum(v.scheduled for v in visits),
        "started": sum(v.started for v in visits),
        "completed": sum(v.completed for v in visits),
        "no_shows": sum(v.no_show for v in visits),
        "left_before_admitted": sum(v.left_before_admitted for v in visits),
        "provider_never_joined": sum(v.provider_never_joined for v in visits),
        "cancelled": sum(not v.scheduled for v in visits),
        "wait_median_seconds": percentile(waits, 0.5),
        "wait_p90_seconds": percentile(waits, 0.9),
        "duration_median_seconds": percentile(durations, 0.5),
        "duration_p90_seconds": percentile(durations, 0.9),
        "lateness_median_seconds": percentile(lateness, 0.5),
        "lateness_p90_seconds": percentile(lateness, 0.9),
        "patients_joined": joined,
        "device_tested": tested,
        "device_passed": passed,
        "device_tested_share": _share(tested, joined),
        "device_pass_rate": _share(passed, tested),
        "waits": waits,
    }


def _route_label(route: str | None) -> str:
    return {JoinRoute.SMS: _("SMS link"), JoinRoute.MYCHART: _("MyChart"),
            JoinRoute.GUEST: _("Guest link")}.get(route, _("Not recorded"))


def _language_label(code: str | None) -> str:
    if not code:
        return _("Not recorded")
    try:
        name = Locale.parse(code.replace("-", "_")).get_display_name(get_locale() or "en")
    except (UnknownLocaleError, ValueError, TypeError):
        return code
    return name or code


def _wait_label(index: int) -> str:
    low = WAIT_BUCKETS_MINUTES[index]
    if index + 1 == len(WAIT_BUCKETS_MINUTES):
        return _("%(low)d min or more", low=low)
    return _("%(low)d–%(high)d min", low=low, high=WAIT_BUCKETS_MINUTES[index + 1])


def build(filters: Filters, now: datetime) -> Report:
    """The usage report for ``filters`` as of ``now``."""
    visits = _facts(filters)
    names = dict(db.session.execute(sa.select(EhrEndpoint.id, EhrEndpoint.name)).all())

    by_period: dict[date, list[Counted]] = {period: [] for period in filters.periods()}
    by_endpoint: dict[str, list[Counted]] = defaultdict(list)
    by_department: dict[str, list[Counted]] = defaultdict(list)
    by_provider: dict[tuple[str | None, str | None], list[Counted]] = defaultdict(list)
    counted_all: list[Counted] = []
    joined_visits: list[VisitFacts] = []
    for visit in visits:
        counted = Counted.of(visit, now)
        counted_all.append(counted)
        if counted.joined:
            joined_visits.append(visit)
        zone = filters.zones[visit.endpoint_id]
        by_period.setdefault(filters.period_of(visit.start_at, zone), []).append(counted)
        by_endpoint[names.get(visit.endpoint_id, str(visit.endpoint_id))].append(counted)
        by_department[visit.department or ""].append(counted)
        by_provider[(visit.provider_ehr_id, visit.provider_name)].append(counted)

    period_label = _l("Week of") if filters.period == "week" else _l("Day")
    periods = Table(
        "periods", _l("Visits by week") if filters.period == "week" else _l("Visits by day"),
        _l("Visits scheduled, started and completed, and who never came, per period"),
        (Column("period", period_label, "date"), *COUNT_COLUMNS,
         Column("wait_median_seconds", _l("Lobby wait, median"), "seconds"),
         Column("duration_median_seconds", _l("Duration, median"), "seconds")))
    for period in sorted(by_period):
        periods.rows.append({"period": period, **metrics(by_period[period])})

    everything = metrics(counted_all)
    times = Table("times", _l("Waiting, duration and lateness"),
                  _l("Median and 90th percentile of the lobby wait, the visit's duration and "
                     "the lateness from the scheduled start to the admission"),
                  (Column("measure", _l("Measure"), "text"),
                   Column("median_seconds", _l("Median"), "seconds"),
                   Column("p90_seconds", _l("90th percentile"), "seconds")))
    for key, label in (("wait", _("Lobby wait")), ("duration", _("Visit duration")),
                       ("lateness", _("Lateness (scheduled start to admission)"))):
        times.rows.append({"measure": label,
                           "median_seconds": everything[f"{key}_median_seconds"],
                           "p90_seconds": everything[f"{key}_p90_seconds"]})

    waits = Table("wait_histogram", _l("Lobby wait"),
                  _l("Patients admitted, by how long they waited in the lobby"),
                  (Column("wait", _l("Wait"), "text"), Column("patients", _l("Patients"))))
    counts = histogram(everything["waits"], [m * 60 for m in WAIT_BUCKETS_MINUTES])
    waits.rows.extend({"wait": _wait_label(i), "patients": n} for i, n in enumerate(counts))

    device = Table("device_test", _l("Device test before the visit"),
                   _l("Patients who connected, ran the device test before the visit, and "
                      "passed it"),
                   (Column("measure", _l("Patients"), "text"), Column("count", _l("Number")),
                    Column("share", _l("Share"), "percent")))
    device.rows.extend([
        {"measure": _("Connected to their visit"), "count": everything["patients_joined"],
         "share": None},
        {"measure": _("Ran the device test first"), "count": everything["device_tested"],
         "share": everything["device_tested_share"]},
        {"measure": _("Passed it"), "count": everything["device_passed"],
         "share": everything["device_pass_rate"]},
    ])

    joined = joined_visits
    routes = Table("join_routes", _l("How patients joined"),
                   _l("Patients who connected, by the way they opened their visit"),
                   (Column("route", _l("Route"), "text"), Column("patients", _l("Patients")),
                    Column("share", _l("Share"), "percent")))
    route_counts = Counter(v.join_route for v in joined)
    for route in (JoinRoute.SMS, JoinRoute.MYCHART, JoinRoute.GUEST, None):
        if route_counts.get(route) or route is not None:
            routes.rows.append({"route": _route_label(route), "patients": route_counts.get(route, 0),
                                "share": _share(route_counts.get(route, 0), len(joined))})
    languages = Table("languages", _l("Patients' languages"),
                      _l("Patients who connected, by the language their clinic recorded"),
                      (Column("language", _l("Language"), "text"),
                       Column("code", _l("Code"), "text"), Column("patients", _l("Patients")),
                       Column("share", _l("Share"), "percent")))
    for code, n in sorted(Counter(v.language for v in joined).items(),
                          key=lambda item: (-item[1], item[0] or "")):
        languages.rows.append({"language": _language_label(code), "code": code, "patients": n,
                               "share": _share(n, len(joined))})

    full = (*COUNT_COLUMNS, *TIME_COLUMNS, *DEVICE_COLUMNS)
    endpoints_table = Table("endpoints", _l("By endpoint"), _l("Every figure per EHR endpoint"),
                            (Column("endpoint", _l("Endpoint"), "text"), *full))
    for name in sorted(by_endpoint):
        endpoints_table.rows.append({"endpoint": name, **metrics(by_endpoint[name])})
    departments = Table("departments", _l("By department"),
                        _l("Every figure per department, as the EHR names it"),
                        (Column("department", _l("Department"), "text"), *full))
    for name in sorted(by_department):
        departments.rows.append({"department": name or _("(none)"),
                                 **metrics(by_department[name])})
    providers_table = Table("providers", _l("By provider"),
                            _l("Every figure per provider (the visit's first provider), by EHR "
                               "id"),
                            (Column("provider", _l("Provider (EHR id)"), "text"),
                             Column("provider_name", _l("Name"), "text"), *full))
    for (ehr_id, name) in sorted(by_provider, key=lambda key: (key[0] or "", key[1] or "")):
        providers_table.rows.append({"provider": ehr_id or _("(none)"), "provider_name": name,
                                     **metrics(by_provider[(ehr_id, name)])})

    for table in (periods, endpoints_table, departments, providers_table):
        for row in table.rows:
            row.pop("waits", None)
    charts = [
        Chart("visits", _l("Visits completed per period"),
              _l("One bar per period; its length is the number of visits completed."),
              periods, "period", "completed"),
        Chart("wait", _l("Lobby wait"),
              _l("One bar per range of waiting time; its length is the number of patients."),
              waits, "wait", "patients"),
        Chart("routes", _l("How patients joined"),
              _l("One bar per way of joining; its length is the number of patients."),
              routes, "route", "patients"),
    ]
    return Report("usage", filters, now,
                  [periods, times, waits, device, routes, languages, endpoints_table,
                   departments, providers_table], charts)


KIND = framework.register(framework.ReportKind(
    "usage", _l("Usage"),
    _l("Visits scheduled, started and completed; no-shows; lobby wait, duration and "
       "lateness; device tests; how patients joined and their language."),
    build, filters=("endpoint", "department", "provider", "period")))
