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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from babel import Locale, UnknownLocaleError
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from device_test.models import DeviceTestResult
from ehr.models import EhrEndpoint
from extensions import db
from ops.background import periodic
from reports import framework, usage_sums
from reports.framework import (
    Chart,
    Column,
    Filters,
    Report,
    Table,
    histogram,
    percentile,
)
from reports.health import zone_of
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

# Rows of the department and provider tables shown before "Show the other N rows".
FOLD_AFTER = 25
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
    20,000 visits): off for this transaction; and enough memory that the sorts behind the
    medians stay off disk (a year of 100,000 visits spilled 11 MB with the default 4 MB)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.text("SET LOCAL jit = off"))
        db.session.execute(sa.text("SET LOCAL work_mem = '64MB'"))


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

    # "Is there one" as a LIMIT 1 probe rather than EXISTS: PostgreSQL may turn an EXISTS
    # in the select list into one hash of every participant who ever connected (a scan of
    # the whole table for a day's visits); a LIMIT subquery stays an index probe per visit.
    joined = sa.select(sa.literal(1)).where(
        patient.c.appointment_id == a.c.id, patient.c.role == ParticipantRole.PATIENT,
        patient.c.presence != PresenceState.NEVER).limit(1).scalar_subquery().is_not(None)
    provider_joined = sa.select(sa.literal(1)).where(
        provider.c.appointment_id == a.c.id, provider.c.role == ParticipantRole.PROVIDER,
        provider.c.presence != PresenceState.NEVER).limit(1).scalar_subquery().is_not(None)
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


def _facts(filters: Filters, since: datetime | None = None) -> list[VisitFacts]:
    """A line per visit whose scheduled start is in the range (each endpoint's own days),
    and not before ``since``: settled visits from ``usage_visit_facts``, the rest worked
    out now."""
    if not filters.zones:
        return []
    _no_jit()
    found: list[VisitFacts] = []
    for kind, query in _settled_and_live(filters, FACT_COLUMNS, since):
        if kind == "stored":
            found.extend(VisitFacts(*row) for row in db.session.execute(query))
        else:
            found.extend(_live_rows(query))
    return found


def _settled_and_live(filters: Filters, stored_columns: Sequence[str],
                      since: datetime | None = None):
    """Per endpoint time zone: ("stored", the settled visits of the range from
    ``usage_visit_facts`` in ``stored_columns``) and ("live", the rest from the live
    query), with the same department and provider filters on both; none scheduled before
    ``since``."""
    settled = settled_before()
    a, _provider, live = _live_query()
    stored = UsageVisitFacts.__table__
    for zone, ids in filters.by_zone().items():
        start, stop = filters.bounds(zone)
        if since is not None:
            start = max(start, since)
        if settled is not None and start < settled:
            query = sa.select(*(stored.c[name] for name in stored_columns)).where(
                stored.c.endpoint_id.in_(ids), stored.c.start_at >= start,
                stored.c.start_at < min(stop, settled))
            if filters.department:
                query = query.where(stored.c.department == filters.department)
            if filters.provider:
                query = query.where(_has_provider(stored.c.appointment_id, filters.provider))
            yield "stored", query
            start = max(start, settled)
        if start < stop:
            query = live.where(a.c.endpoint_id.in_(ids), a.c.start_at >= start,
                               a.c.start_at < stop)
            if filters.department:
                query = query.where(a.c.department_display == filters.department)
            if filters.provider:
                query = query.where(_has_provider(a.c.id, filters.provider))
            yield "live", query


def _has_provider(appointment_id, ehr_user_id: str) -> sa.ColumnElement[bool]:
    """The visit had this provider, first or not: settled and live visits match alike (a
    settled visit keeps only its first provider's id)."""
    return appointment_id.in_(sa.select(Participant.appointment_id).where(
        Participant.ehr_user_id == ehr_user_id, Participant.role == ParticipantRole.PROVIDER))


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
    lock on the horizon row (PostgreSQL), and a repeated day replaces its rows. Then the
    newly kept facts are summed per clinic day (``_catch_up_sums``)."""
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
            added += _add_stragglers(since, now)
            _catch_up_sums(now)
            return added
        until = min(first + timedelta(days=1), horizon)
        _no_jit()
        rows = _live_rows(live.where(a.c.start_at >= first, a.c.start_at < until))
        if rows:
            db.session.execute(stored.delete().where(stored.c.start_at >= first,
                                                     stored.c.start_at < until))
            db.session.execute(_insert_once(stored), [
                {name: getattr(row, name) for name in FACT_COLUMNS} for row in rows])
        if since is None:
            db.session.execute(_insert_once(state).values(id=1, settled_before=until))
        else:
            db.session.execute(state.update().where(state.c.id == 1)
                               .values(settled_before=until))
        db.session.commit()
        added += len(rows)


# Appointment ids are handed out in order, but a booking's transaction may commit after a
# later one's: the late-booking check moves past an id only once its row is this old.
_STRAGGLER_SETTLE = timedelta(hours=1)


def _add_stragglers(since: datetime, now: datetime) -> int:
    """Visits scheduled before the horizon that were added after it passed them (an HL7
    booking entered late, sample data), among the appointments added since the last
    check (by id, through the primary key: the work follows what was booked, not the
    size of the history); their days are summed again."""
    a, _provider, live = _live_query()
    stored = UsageVisitFacts.__table__
    state = UsageFactsState.__table__
    after = db.session.execute(sa.select(state.c.stragglers_checked_through)
                               .where(state.c.id == 1)).scalar() or 0
    through = db.session.execute(
        sa.select(a.c.id).where(a.c.created_at < now - _STRAGGLER_SETTLE)
        .order_by(a.c.id.desc()).limit(1)).scalar()
    added = 0
    while True:
        missing = (sa.select(a.c.id).where(a.c.id > after, a.c.start_at < since,
                                           ~sa.exists().where(stored.c.appointment_id == a.c.id))
                   .limit(_STRAGGLER_BATCH))
        _no_jit()
        rows = _live_rows(live.where(a.c.id.in_(missing)))
        if not rows:
            if through is not None and through > after:
                db.session.execute(state.update().where(state.c.id == 1)
                                   .values(stragglers_checked_through=through))
                db.session.commit()
            else:
                db.session.rollback()
            return added
        db.session.execute(_insert_once(stored), [
            {name: getattr(row, name) for name in FACT_COLUMNS} for row in rows])
        _count_again(rows, now)
        db.session.commit()
        added += len(rows)


def _insert_once(table: sa.Table):
    """An INSERT that skips rows already there: every server process refreshes at start-up,
    at about the same moment, and two may find the same visits (or the first state row)
    missing; the slower one's copy is the same and is left out instead of failing."""
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table).on_conflict_do_nothing()


# --- the kept facts, summed per clinic day (reports/usage_sums.py) -----------------------------

# The facts summed per transaction while the sums catch up (a week of a million-visit year
# is about 20,000 lines, counted in Python in about half a second).
_SUMS_BATCH = timedelta(days=7)


def sums_before() -> datetime | None:
    """Visits scheduled before this are counted in the sums (None: none is)."""
    return _aware(db.session.execute(
        sa.select(UsageFactsState.sums_before).where(UsageFactsState.id == 1)).scalar())


def _zones() -> dict[int, ZoneInfo]:
    return {endpoint.id: zone_of(endpoint.site_timezone)
            for endpoint in db.session.execute(sa.select(EhrEndpoint)).scalars()}


def _catch_up_sums(now: datetime) -> None:
    """Sum the facts kept since the sums' horizon, a week per transaction: each endpoint's
    clinic days that week touches are counted again whole, from the facts scheduled before
    the new horizon. The horizon moves only from where this process read it (under a lock
    on PostgreSQL; on SQLite the first write takes the database's), so two processes never
    count the same week twice."""
    state = UsageFactsState.__table__
    stored = UsageVisitFacts.__table__
    zones = _by_zone(_zones())
    while True:
        query = sa.select(state.c.settled_before, state.c.sums_before).where(state.c.id == 1)
        if db.session.get_bind().dialect.name == "postgresql":
            query = query.with_for_update()
        row = db.session.execute(query).first()
        settled, done = (_aware(row.settled_before), _aware(row.sums_before)) if row else (
            None, None)
        if settled is None or (done is not None and done >= settled):
            db.session.rollback()
            return
        first = done or _aware(db.session.execute(
            sa.select(sa.func.min(stored.c.start_at))).scalar()) or settled
        until = min(first + _SUMS_BATCH, settled) if first < settled else settled
        moved = db.session.execute(
            state.update().where(state.c.id == 1, state.c.sums_before.is_not_distinct_from(done))
            .values(sums_before=until)).rowcount
        if not moved:
            db.session.rollback()
            continue
        if first < until:
            for zone, ids in zones.items():
                _count_days(ids, first.astimezone(zone).date(),
                            (until - timedelta(microseconds=1)).astimezone(zone).date(), zone,
                            until, now)
        db.session.commit()


def _by_zone(zones: dict[int, ZoneInfo]) -> dict[ZoneInfo, list[int]]:
    grouped: dict[ZoneInfo, list[int]] = defaultdict(list)
    for endpoint_id, zone in zones.items():
        grouped[zone].append(endpoint_id)
    return grouped


def _count_again(rows: Sequence[VisitFacts], now: datetime) -> None:
    """The clinic days of facts added behind the sums' horizon, counted again."""
    before = sums_before()
    if before is None:
        return
    zones = _zones()
    days = {(row.endpoint_id, row.start_at.astimezone(zones[row.endpoint_id]).date())
            for row in rows if row.start_at < before and row.endpoint_id in zones}
    for endpoint_id, day in sorted(days):
        _count_days([endpoint_id], day, day, zones[endpoint_id], before, now)


def _count_days(endpoint_ids: Sequence[int], first: date, last: date, zone: ZoneInfo,
                before: datetime, now: datetime) -> None:
    """Replace the sums of these endpoints' clinic days ``first``..``last`` (in ``zone``)
    with those of their kept facts scheduled before ``before``."""
    stored = UsageVisitFacts.__table__
    start = datetime.combine(first, time(0), tzinfo=zone)
    stop = min(datetime.combine(last + timedelta(days=1), time(0), tzinfo=zone), before)
    days: dict[tuple, usage_sums.Sums] = {}
    providers: dict[tuple, usage_sums.Sums] = {}
    spoken: Counter = Counter()
    lines = db.session.execute(sa.select(*(stored.c[name] for name in FACT_COLUMNS)).where(
        stored.c.endpoint_id.in_(sorted(endpoint_ids)), stored.c.start_at >= start,
        stored.c.start_at < stop))
    for line in lines:
        visit = VisitFacts(*line)
        counted = Counted.of(visit, now)
        day = visit.start_at.astimezone(zone).date()
        group = (visit.endpoint_id, day, visit.department)
        usage_sums.add(days, group, counted, visit.join_route)
        usage_sums.add(providers, (*group, visit.provider_ehr_id, visit.provider_name),
                       counted, visit.join_route)
        if counted.joined:
            spoken[(*group, visit.language)] += 1
    usage_sums.replace_days(endpoint_ids, first, last, days, providers, spoken)


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


@dataclass
class Figures:
    """Every figure of the report before it is laid out in tables: metrics (``metrics``'s
    keys) per period, endpoint name, department, provider (EHR id, name), and overall; the
    lobby-wait histogram; patients who connected per join route and per language."""

    by_period: dict[date, dict]
    by_endpoint: dict[str, dict]
    by_department: dict[str, dict]
    by_provider: dict[tuple[str | None, str | None], dict]
    overall: dict
    wait_counts: list[int]
    routes: Counter
    languages: Counter


def _figures_python(filters: Filters, now: datetime, names: dict[int, str]) -> Figures:
    """From a line per visit (SQLite, and any database): ``_facts`` then ``metrics``."""
    by_period: dict[date, list[Counted]] = {period: [] for period in filters.periods()}
    by_endpoint: dict[str, list[Counted]] = defaultdict(list)
    by_department: dict[str, list[Counted]] = defaultdict(list)
    by_provider: dict[tuple[str | None, str | None], list[Counted]] = defaultdict(list)
    counted_all: list[Counted] = []
    routes: Counter = Counter()
    languages: Counter = Counter()
    for visit in _facts(filters):
        counted = Counted.of(visit, now)
        counted_all.append(counted)
        if counted.joined:
            routes[visit.join_route] += 1
            languages[visit.language] += 1
        zone = filters.zones[visit.endpoint_id]
        by_period.setdefault(filters.period_of(visit.start_at, zone), []).append(counted)
        by_endpoint[names.get(visit.endpoint_id, str(visit.endpoint_id))].append(counted)
        by_department[visit.department or ""].append(counted)
        by_provider[(visit.provider_ehr_id, visit.provider_name)].append(counted)
    overall = metrics(counted_all)
    return Figures(
        {key: metrics(group) for key, group in by_period.items()},
        {key: metrics(group) for key, group in by_endpoint.items()},
        {key: metrics(group) for key, group in by_department.items()},
        {key: metrics(group) for key, group in by_provider.items()},
        overall, histogram(overall["waits"], [m * 60 for m in WAIT_BUCKETS_MINUTES]),
        routes, languages)


def _source_sql(filters: Filters):
    """PostgreSQL: every visit of the range as one derived table, settled ones from
    ``usage_visit_facts``, the rest from the live query, in the same columns."""
    columns = ("endpoint_id", "start_at", "end_at", "department", "status", "ended_at",
               "patient_joined", "admitted_at", "lobby_entered_at", "provider_joined",
               "provider_ehr_id", "provider_name", "join_route", "language", "device_test")
    parts = []
    for kind, query in _settled_and_live(filters, columns):
        if kind == "stored":
            parts.append(query)
            continue
        rows = query.subquery("live")
        values = (
            rows.c.endpoint_id, rows.c.start_at, rows.c.end_at, rows.c.department_display,
            rows.c.status, rows.c.ended_at, rows.c.joined, rows.c.admitted_at,
            rows.c.entered_at, rows.c.provider_joined, _first_provider(rows, "ehr_user_id"),
            _first_provider(rows, "display_name"), rows.c.join_route, rows.c.language,
            sa.case((rows.c.best_test == 2, "pass"), (rows.c.best_test == 1, "warn"),
                    (rows.c.best_test == 0, "fail")))
        parts.append(sa.select(*(value.label(name) for value, name in zip(values, columns)))
                     .select_from(rows))
    if not parts:
        return None
    union = parts[0] if len(parts) == 1 else sa.union_all(*parts)
    return union.subquery("visits")


def _first_provider(rows, column: str):
    """The live visit's first provider's ``column``: a primary-key probe per visit. As a
    join, PostgreSQL hashed every participant (0.5 s of a week's report at 2,000,000
    participants) for a few thousand visits."""
    first = Participant.__table__.alias("first_provider")
    return sa.select(first.c[column]).where(first.c.id == rows.c.provider_id).scalar_subquery()


def _figures_sql(filters: Filters, now: datetime, names: dict[int, str]) -> Figures:
    """PostgreSQL: the same figures as ``_figures_python``, added up by the database (one
    GROUPING SETS statement, ``percentile_cont`` for medians and percentiles), so a range
    of a year returns a few hundred rows instead of a line per visit."""
    empty = metrics([])
    periods = {period: dict(empty) for period in filters.periods()}
    source = _source_sql(filters)
    if source is None:
        return Figures(periods, {}, {}, {}, empty, [0] * len(WAIT_BUCKETS_MINUTES),
                       Counter(), Counter())
    _no_jit()
    v = source.c
    zone = sa.case({endpoint_id: name for endpoint_id, name in filters.zones.items()},
                   value=v.endpoint_id)
    local = sa.func.timezone(zone, v.start_at)
    period = sa.cast(sa.func.date_trunc("week", local) if filters.period == "week"
                     else local, sa.Date)

    def seconds(later, earlier):
        return sa.cast(sa.extract("epoch", later - earlier), sa.Float)

    scheduled = v.status != AppointmentStatus.CANCELLED
    started = sa.and_(scheduled, v.admitted_at.is_not(None))
    completed = sa.and_(started, sa.or_(v.ended_at.is_not(None),
                                        v.status == AppointmentStatus.FULFILLED))
    over = sa.and_(scheduled, sa.or_(v.ended_at.is_not(None), v.end_at <= now))
    joined = sa.and_(scheduled, v.patient_joined)
    derived = sa.select(
        period.label("period"), v.endpoint_id,
        sa.func.coalesce(v.department, "").label("department"),
        v.provider_ehr_id, v.provider_name, v.join_route, v.language,
        scheduled.label("scheduled"), started.label("started"), completed.label("completed"),
        sa.and_(over, sa.not_(v.patient_joined)).label("no_show"),
        sa.and_(over, v.patient_joined, v.admitted_at.is_(None)).label("left"),
        sa.and_(over, sa.not_(v.provider_joined)).label("provider_absent"),
        joined.label("joined"),
        sa.and_(joined, v.device_test.is_not(None)).label("tested"),
        sa.and_(joined, v.device_test == "pass").label("passed"),
        sa.case((sa.and_(started, v.lobby_entered_at.is_not(None)),
                 sa.func.greatest(0.0, seconds(v.admitted_at, v.lobby_entered_at)))
                ).label("wait"),
        sa.case((sa.and_(completed, v.ended_at.is_not(None)),
                 sa.func.greatest(0.0, seconds(v.ended_at, v.admitted_at)))).label("duration"),
        sa.case((started, seconds(v.admitted_at, v.start_at))).label("lateness"),
    ).subquery("counted")
    edges = [m * 60 for m in WAIT_BUCKETS_MINUTES]
    wait_bucket = sa.case(*((derived.c.wait >= edge, index) for index, edge in reversed(
        list(enumerate(edges))) if index), else_=0)
    d = derived.c
    figures = [
        sa.func.count().filter(d.scheduled).label("scheduled"),
        sa.func.count().filter(d.started).label("started"),
        sa.func.count().filter(d.completed).label("completed"),
        sa.func.count().filter(d.no_show).label("no_shows"),
        sa.func.count().filter(d.left).label("left_before_admitted"),
        sa.func.count().filter(d.provider_absent).label("provider_never_joined"),
        sa.func.count().filter(sa.not_(d.scheduled)).label("cancelled"),
        sa.func.count().filter(d.joined).label("patients_joined"),
        sa.func.count().filter(d.tested).label("device_tested"),
        sa.func.count().filter(d.passed).label("device_passed"),
        sa.func.count(d.wait).label("waited"),
    ]
    for key in ("wait", "duration", "lateness"):
        figures.append(sa.func.percentile_cont(0.5).within_group(d[key])
                       .label(f"{key}_median_seconds"))
        figures.append(sa.func.percentile_cont(0.9).within_group(d[key])
                       .label(f"{key}_p90_seconds"))
    bucket = wait_bucket.label("wait_bucket")
    # Every grouping in one pass; the histogram, routes and languages are groupings too.
    sets = sa.func.grouping_sets(sa.tuple_(d.period), sa.tuple_(d.endpoint_id),
                                 sa.tuple_(d.department),
                                 sa.tuple_(d.provider_ehr_id, d.provider_name),
                                 sa.tuple_(wait_bucket), sa.tuple_(d.join_route),
                                 sa.tuple_(d.language), sa.tuple_())
    grouped = db.session.execute(sa.select(
        sa.func.grouping(d.period).label("g_period"),
        sa.func.grouping(d.endpoint_id).label("g_endpoint"),
        sa.func.grouping(d.department).label("g_department"),
        sa.func.grouping(d.provider_ehr_id).label("g_provider"),
        sa.func.grouping(wait_bucket).label("g_bucket"),
        sa.func.grouping(d.join_route).label("g_route"),
        sa.func.grouping(d.language).label("g_language"),
        d.period, d.endpoint_id, d.department, d.provider_ehr_id, d.provider_name, bucket,
        d.join_route, d.language, *figures)
        .group_by(sets)).mappings().all()
    by_endpoint: dict[str, dict] = {}
    by_department: dict[str, dict] = {}
    by_provider: dict[tuple[str | None, str | None], dict] = {}
    overall = dict(empty)
    wait_counts = [0] * len(edges)
    routes: Counter = Counter()
    languages: Counter = Counter()
    for row in grouped:
        values = {key: row[key] for key in row
                  if not key.startswith("g_") and key not in (
                      "period", "endpoint_id", "department", "provider_ehr_id",
                      "provider_name", "wait_bucket", "join_route", "language", "waited")}
        values["device_tested_share"] = _share(values["device_tested"],
                                               values["patients_joined"])
        values["device_pass_rate"] = _share(values["device_passed"], values["device_tested"])
        if not row["g_period"]:
            periods[row["period"]] = values
        elif not row["g_endpoint"]:
            by_endpoint[names.get(row["endpoint_id"], str(row["endpoint_id"]))] = values
        elif not row["g_department"]:
            by_department[row["department"]] = values
        elif not row["g_provider"]:
            by_provider[(row["provider_ehr_id"], row["provider_name"])] = values
        elif not row["g_bucket"]:
            wait_counts[row["wait_bucket"]] += row["waited"]
        elif not row["g_route"]:
            if row["patients_joined"]:
                routes[row["join_route"]] = row["patients_joined"]
        elif not row["g_language"]:
            if row["patients_joined"]:
                languages[row["language"]] = row["patients_joined"]
        else:
            overall = values
    return Figures(periods, by_endpoint, by_department, by_provider, overall, wait_counts,
                   routes, languages)


def _sums_horizon(filters: Filters) -> datetime | None:
    """The sums' horizon when this report reads the sums: more than
    ``usage_sums.EXACT_UP_TO`` settled visits and no provider filter (the sums keep only a
    visit's first provider; a provider's visits are few enough to read as lines)."""
    if filters.provider or not filters.zones:
        return None
    horizon = sums_before()
    if horizon is None or usage_sums.visits_counted(
            filters.zones, filters.days.start, filters.days.end,
            filters.department) <= usage_sums.EXACT_UP_TO:
        return None
    return horizon


def _figures_from_sums(filters: Filters, now: datetime, names: dict[int, str],
                       horizon: datetime) -> Figures:
    """From the sums of the settled clinic days (``usage_sums``), each group's sums added
    up by the database, plus a line per visit scheduled since the sums' horizon."""
    scope = (filters.zones, filters.days.start, filters.days.end, filters.department)
    days = usage_sums.grouped(usage_sums.DAYS, ("day",), *scope)
    endpoints = usage_sums.grouped(usage_sums.DAYS, ("endpoint_id",), *scope)
    departments = usage_sums.grouped(usage_sums.DAYS, ("department",), *scope)
    overall = usage_sums.grouped(usage_sums.DAYS, (), *scope)
    providers = usage_sums.grouped(usage_sums.PROVIDER_DAYS,
                                   ("provider_ehr_id", "provider_name"), *scope)
    languages = Counter(usage_sums.languages(*scope))
    for visit in _facts(filters, since=horizon):
        counted = Counted.of(visit, now)
        route = visit.join_route
        day = visit.start_at.astimezone(ZoneInfo(filters.zones[visit.endpoint_id])).date()
        usage_sums.add(days, (day,), counted, route)
        usage_sums.add(endpoints, (visit.endpoint_id,), counted, route)
        usage_sums.add(departments, (visit.department,), counted, route)
        usage_sums.add(overall, (), counted, route)
        usage_sums.add(providers, (visit.provider_ehr_id, visit.provider_name), counted, route)
        if counted.joined:
            languages[visit.language] += 1
    periods = {period: usage_sums.empty() for period in filters.periods()}
    for (day,), sums in days.items():
        period = day - timedelta(days=day.weekday()) if filters.period == "week" else day
        usage_sums.merge(periods.setdefault(period, usage_sums.empty()), sums)
    everything = overall.get((), usage_sums.empty())
    return Figures(
        {period: usage_sums.figures(sums) for period, sums in periods.items()},
        {names.get(key, str(key)): usage_sums.figures(sums)
         for (key,), sums in endpoints.items()},
        {key or "": usage_sums.figures(sums) for (key,), sums in departments.items()},
        {key: usage_sums.figures(sums) for key, sums in providers.items()},
        usage_sums.figures(everything),
        usage_sums.wait_histogram(everything, [m * 60 for m in WAIT_BUCKETS_MINUTES]),
        Counter({route: n for route, n in usage_sums.routes(everything).items() if n}),
        Counter({language: n for language, n in languages.items() if n}))


def build(filters: Filters, now: datetime) -> Report:
    """The usage report for ``filters`` as of ``now``."""
    names = dict(db.session.execute(sa.select(EhrEndpoint.id, EhrEndpoint.name)).all())
    horizon = _sums_horizon(filters)
    if horizon is not None:
        figures = _figures_from_sums(filters, now, names, horizon)
    elif db.session.get_bind().dialect.name == "postgresql":
        figures = _figures_sql(filters, now, names)
    else:
        figures = _figures_python(filters, now, names)
    everything = figures.overall
    joined_count = everything["patients_joined"]

    period_label = _l("Week of") if filters.period == "week" else _l("Day")
    periods = Table(
        "periods", _l("Visits by week") if filters.period == "week" else _l("Visits by day"),
        _l("Visits scheduled, started and completed, and who never came, per period"),
        (Column("period", period_label, "date"), *COUNT_COLUMNS,
         Column("wait_median_seconds", _l("Lobby wait, median"), "seconds"),
         Column("duration_median_seconds", _l("Duration, median"), "seconds")))
    for period in sorted(figures.by_period):
        periods.rows.append({"period": period, **figures.by_period[period]})

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
    waits.rows.extend({"wait": _wait_label(i), "patients": n}
                      for i, n in enumerate(figures.wait_counts))

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

    routes = Table("join_routes", _l("How patients joined"),
                   _l("Patients who connected, by the way they opened their visit"),
                   (Column("route", _l("Route"), "text"), Column("patients", _l("Patients")),
                    Column("share", _l("Share"), "percent")))
    route_counts = figures.routes
    for route in (JoinRoute.SMS, JoinRoute.MYCHART, JoinRoute.GUEST, None):
        if route_counts.get(route) or route is not None:
            count = route_counts.get(route, 0)
            routes.rows.append({"route": _route_label(route), "patients": count,
                                "share": _share(count, joined_count)})
    languages = Table("languages", _l("Patients' languages"),
                      _l("Patients who connected, by the language their clinic recorded"),
                      (Column("language", _l("Language"), "text"),
                       Column("code", _l("Code"), "text"), Column("patients", _l("Patients")),
                       Column("share", _l("Share"), "percent")))
    for code, n in sorted(figures.languages.items(),
                          key=lambda item: (-item[1], item[0] or "")):
        languages.rows.append({"language": _language_label(code), "code": code, "patients": n,
                               "share": _share(n, joined_count)})

    full = (*COUNT_COLUMNS, *TIME_COLUMNS, *DEVICE_COLUMNS)
    endpoints_table = Table("endpoints", _l("By endpoint"), _l("Every figure per EHR endpoint"),
                            (Column("endpoint", _l("Endpoint"), "text"), *full))
    for name in sorted(figures.by_endpoint):
        endpoints_table.rows.append({"endpoint": name, **figures.by_endpoint[name]})
    departments = Table("departments", _l("By department"),
                        _l("Every figure per department, as the EHR names it"),
                        (Column("department", _l("Department"), "text"), *full),
                        fold_after=FOLD_AFTER)
    for name in sorted(figures.by_department):
        departments.rows.append({"department": name or _("(none)"),
                                 **figures.by_department[name]})
    providers_table = Table("providers", _l("By provider"),
                            _l("Every figure per provider (the visit's first provider), by EHR "
                               "id"),
                            (Column("provider", _l("Provider (EHR id)"), "text"),
                             Column("provider_name", _l("Name"), "text"), *full),
                            fold_after=FOLD_AFTER)
    for (ehr_id, name) in sorted(figures.by_provider,
                                 key=lambda key: (key[0] or "", key[1] or "")):
        providers_table.rows.append({"provider": ehr_id or _("(none)"), "provider_name": name,
                                     **figures.by_provider[(ehr_id, name)]})

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
    notes = [] if horizon is None else [_l(
        "Over this many visits, medians and 90th percentiles are estimated from daily "
        "totals: to within 30 seconds for times under 5 minutes, a minute under 15 minutes "
        "and 10 minutes under an hour (a row of only a few visits can be further off). "
        "Counts are exact. Choose fewer days, or one provider, for exact times.")]
    return Report("usage", filters, now,
                  [periods, times, waits, device, routes, languages, endpoints_table,
                   departments, providers_table], charts, notes=notes)


KIND = framework.register(framework.ReportKind(
    "usage", _l("Usage"),
    _l("Visits scheduled, started and completed; no-shows; lobby wait, duration and "
       "lateness; device tests; how patients joined and their language."),
    build, filters=("endpoint", "department", "provider", "period")))
