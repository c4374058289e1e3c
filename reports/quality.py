"""The call-quality report: round-trip time, jitter, loss, bitrate and estimated MOS of the
calls in the chosen days, their distributions and the share of poor time, the share of
visits relayed through TURN, by participant role and by coarse browser and OS family; the
20 worst visits, each with a minute-by-minute timeline.

Everything but the timeline reads ``call_quality_rollups`` (a row per person in a call,
summed as samples arrive: visits/quality.py), through
``ix_call_quality_rollups_endpoint_id_first_at``; a call belongs to the day its first
sample came in, in its endpoint's time zone. The timeline reads one visit's samples.
No patient is named: people are their role and a number.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from ehr.models import EhrEndpoint
from extensions import db
from reports import framework
from reports.conditions import appointment_matches
from reports.framework import Chart, Column, Filters, Report, Table
from reports.labels import labelled
from visits.models import (
    Appointment,
    CallQualityDay,
    CallQualityRollup,
    CallQualitySample,
    CallQualityVisit,
    LobbyEntry,
    Participant,
    PresenceEvent,
)
from visits.quality import BUCKETS, POOR_MOS

try:  # the end-of-visit rating (issue 14.4), where it is recorded
    from visits.ratings import VisitRating
except ImportError:  # pragma: no cover - an installation from before ratings
    VisitRating = None

WORST_VISITS = 20
# Browsers sample every 10 s: a sample stands for that much call time.
SAMPLE_SECONDS = 10
METRICS = tuple(BUCKETS)
METRIC_LABELS = {"rtt": _l("Round-trip time (ms)"), "jitter": _l("Jitter (ms)"),
                 "loss": _l("Packet loss (percent)"), "bitrate": _l("Bitrate received (kbit/s)"),
                 "mos": _l("Estimated MOS (1–5)")}
# Row names shown translated on the page (CSV and JSON keep the key).
NAME_LABELS = {"patient": _l("Patient"), "provider": _l("Provider"),
               "interpreter": _l("Interpreter"), "guest": _l("Guest"),
               "Unknown": _l("Unknown"), "Other": _l("Other"), "yes": _l("yes"), "no": _l("no")}
_SUMS = ("samples", "poor", "rtt_sum", "rtt_n", "jitter_sum", "jitter_n", "loss_sum", "loss_n",
         "bitrate_sum", "bitrate_n", "mos_sum", "mos_n",
         *(f"{metric}_b{index}" for metric in METRICS for index in range(5)))


def _figure_columns() -> list[Column]:
    return [
        Column("people", _l("People in calls")),
        Column("call_seconds", _l("Call time"), "seconds"),
        Column("rtt_ms", _l("Mean round-trip time (ms)"), "number"),
        Column("jitter_ms", _l("Mean jitter (ms)"), "number"),
        Column("loss_pct", _l("Mean packet loss (percent)"), "number"),
        Column("bitrate_kbps", _l("Mean bitrate received (kbit/s)"), "number"),
        Column("mos", _l("Mean estimated MOS"), "number"),
        Column("poor_share", _l("Poor time (MOS below %(mos)s)", mos=POOR_MOS), "percent"),
        Column("relayed_share", _l("Relayed through TURN"), "percent"),
    ]


@dataclass
class _Sums:
    """Rollup sums of some group of people."""

    people: int = 0
    relayed_people: int = 0
    values: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, row: Any) -> None:
        self.people += row.people
        self.relayed_people += row.relayed_people
        for name in _SUMS:
            self.values[name] += getattr(row, name) or 0

    def mean(self, metric: str) -> float | None:
        n = self.values[f"{metric}_n"]
        return self.values[f"{metric}_sum"] / n if n else None

    def figures(self) -> dict[str, Any]:
        samples = self.values["samples"]
        return {"people": self.people, "call_seconds": int(samples) * SAMPLE_SECONDS,
                "rtt_ms": _round(self.mean("rtt")), "jitter_ms": _round(self.mean("jitter")),
                "loss_pct": _round(self.mean("loss"), 2),
                "bitrate_kbps": _round(self.mean("bitrate")),
                "mos": _round(self.mean("mos"), 2),
                "poor_share": self.values["poor"] / samples if samples else None,
                "relayed_share": self.relayed_people / self.people if self.people else None}


def _round(value: float | None, digits: int = 1) -> float | None:
    # To 9 places first: sums added in another order (a rebuild) differ in the last bits.
    return None if value is None else round(round(value, 9), digits)


def _on_days(filters: Filters, model) -> list[sa.ColumnElement[bool]]:
    """Rows of the chosen endpoints whose call day (already the endpoint's own) is chosen."""
    return [model.endpoint_id.in_(sorted(filters.zones)), model.day >= filters.days.start,
            model.day <= filters.days.end]


def _sums_by_group(filters: Filters):
    """(role, browser, OS, people, relayed people, *_SUMS) rows: from the day rollups, or,
    with a department or provider chosen, from each person's rollup of those visits."""
    if filters.department or filters.provider:
        r = CallQualityRollup
        return db.session.execute(
            sa.select(r.role, r.browser_family, r.os_family,
                      sa.func.count().label("people"),
                      sa.func.count().filter(r.relayed > 0).label("relayed_people"),
                      *(sa.func.sum(getattr(r, name)).label(name) for name in _SUMS))
            .where(*_on_days(filters, r), *appointment_matches(filters, r.appointment_id))
            .group_by(r.role, r.browser_family, r.os_family)).all()
    d = CallQualityDay
    return db.session.execute(
        sa.select(d.role, d.browser_family, d.os_family,
                  sa.func.sum(d.people).label("people"),
                  sa.func.sum(d.relayed_people).label("relayed_people"),
                  *(sa.func.sum(getattr(d, name)).label(name) for name in _SUMS))
        .where(*_on_days(filters, d))
        .group_by(d.role, d.browser_family, d.os_family)).all()


def _visits(filters: Filters) -> list[sa.ColumnElement[bool]]:
    v = CallQualityVisit
    return [*_on_days(filters, v), *appointment_matches(filters, v.appointment_id)]


def build(filters: Filters, now: datetime) -> Report:
    """The report for ``filters``; ``now`` only stamps it."""
    total = _Sums()
    by: dict[str, dict[str, _Sums]] = {"role": defaultdict(_Sums), "browser": defaultdict(_Sums),
                                       "os": defaultdict(_Sums)}
    for row in _sums_by_group(filters):
        total.add(row)
        by["role"][row.role].add(row)
        by["browser"][row.browser_family or "Unknown"].add(row)
        by["os"][row.os_family or "Unknown"].add(row)
    visits, relayed_visits, rated = _visit_counts(filters)
    summary = Table("summary", _l("All calls"),
                    _l("Calls in the chosen days: means over every 10-second sample"),
                    [Column("visits", _l("Visits with a call")), *_figure_columns(),
                     Column("relayed_visits_share", _l("Visits relayed through TURN"),
                            "percent")])
    row = {"visits": visits, **total.figures(),
           "relayed_visits_share": relayed_visits / visits if visits else None}
    if rated is not None:
        summary.columns = [*summary.columns, Column("rating", _l("Mean rating (1–5)"), "number")]
        row["rating"] = rated.get(None)
    summary.rows.append(row)
    tables = [summary]
    charts = []
    for metric in METRICS:
        table = _distribution(metric, total)
        tables.append(table)
        charts.append(Chart(f"{metric}-chart", METRIC_LABELS[metric],
                            _l("Share of call time in each range"), table, "range", "share"))
    for key, group, title, caption, label in (
            ("roles", "role", _l("By role"), _l("Call quality per participant role"),
             _l("Role")),
            ("browsers", "browser", _l("By browser"), _l("Call quality per browser family"),
             _l("Browser")),
            ("systems", "os", _l("By operating system"),
             _l("Call quality per operating system family"), _l("Operating system"))):
        table = Table(key, title, caption, [Column(group, label, "text"), *_figure_columns()])
        if key == "roles" and rated is not None:
            table.columns = [*table.columns, Column("rating", _l("Mean rating (1–5)"), "number")]
        for name, sums in sorted(by[group].items()):
            table.rows.append({group: labelled(name, NAME_LABELS), **sums.figures()})
            if key == "roles" and rated is not None:
                table.rows[-1]["rating"] = rated.get(name)
        tables.append(table)
        if key == "roles":
            charts.append(Chart("poor-by-role", _l("Poor time by role"),
                                _l("Share of call time with an estimated MOS below %(mos)s",
                                   mos=POOR_MOS), table, "role", "poor_share"))
    tables.append(_worst(filters))
    return Report("quality", filters, now, tables, charts, notes=[
        _l("A call counts in the day its first sample arrived, in its endpoint's time zone. "
           "Poor time: samples with an estimated MOS below %(mos)s.", mos=POOR_MOS)])


def _distribution(metric: str, total: _Sums) -> Table:
    edges = BUCKETS[metric]
    table = Table(metric, METRIC_LABELS[metric],
                  _l("Samples of %(metric)s in each range", metric=METRIC_LABELS[metric]),
                  [Column("range", _l("Range"), "text"), Column("samples", _l("Samples")),
                   Column("share", _l("Share"), "percent")])
    counts = [int(total.values[f"{metric}_b{index}"]) for index in range(5)]
    measured = sum(counts)
    for index, count in enumerate(counts):
        table.rows.append({"range": _range_label(edges, index), "samples": count,
                           "share": count / measured if measured else None})
    return table


def _range_label(edges: tuple[float, ...], index: int) -> str:
    def number(value: float) -> str:
        return f"{value:g}"
    if index == 0:
        return f"< {number(edges[0])}"
    if index == len(edges):
        return f"≥ {number(edges[-1])}"
    return f"{number(edges[index - 1])}–{number(edges[index])}"


def _visit_counts(filters: Filters) -> tuple[int, int, dict[str | None, float] | None]:
    """Visits with a call, those where someone went through TURN, and the mean 1-5 rating
    of those visits, overall (key None) and per role; None when ratings are not recorded."""
    v = CallQualityVisit
    visits, relayed = db.session.execute(
        sa.select(sa.func.count(), sa.func.count().filter(v.relayed > 0))
        .where(*_visits(filters))).one()
    if VisitRating is None:
        return visits, relayed, None
    means: dict[str | None, float] = {}
    rated = sa.select(VisitRating.role, sa.func.avg(VisitRating.score)).join(
        v, v.appointment_id == VisitRating.appointment_id).where(*_visits(filters))
    overall = db.session.execute(rated.with_only_columns(sa.func.avg(VisitRating.score))).scalar()
    if overall is not None:
        means[None] = round(float(overall), 2)
    for role, mean in db.session.execute(rated.group_by(VisitRating.role)):
        means[role] = round(float(mean), 2)
    return visits, relayed, means


def _worst(filters: Filters) -> Table:
    """The visits with the lowest mean MOS, worst first (``ix_call_quality_visits_mos_mean``)."""
    table = Table("worst", _l("The %(count)d worst visits", count=WORST_VISITS),
                  _l("Visits with the lowest mean estimated MOS; each opens its timeline"),
                  [Column("visit", _l("Visit"), "int"),
                   Column("endpoint", _l("Endpoint"), "text"),
                   Column("ehr_appointment_id", _l("EHR appointment"), "text"),
                   Column("start", _l("Scheduled start"), "datetime"),
                   Column("department", _l("Department"), "text"),
                   Column("people", _l("People in calls")),
                   Column("call_seconds", _l("Call time"), "seconds"),
                   Column("mos", _l("Mean estimated MOS"), "number"),
                   Column("poor_share", _l("Poor time"), "percent"),
                   Column("rtt_ms", _l("Mean round-trip time (ms)"), "number"),
                   Column("loss_pct", _l("Mean packet loss (percent)"), "number"),
                   Column("relayed", _l("Relayed through TURN"), "text")])
    v = CallQualityVisit
    worst = (sa.select(v).where(*_visits(filters), v.mos_mean.is_not(None))
             .order_by(v.mos_mean, v.appointment_id).limit(WORST_VISITS).subquery())
    rows = db.session.execute(
        sa.select(worst, Appointment.ehr_appointment_id, Appointment.filler_id,
                  Appointment.start_at, Appointment.department_display, EhrEndpoint.name)
        .join(Appointment, Appointment.id == worst.c.appointment_id)
        .join(EhrEndpoint, EhrEndpoint.id == Appointment.endpoint_id)
        .order_by(worst.c.mos_mean, worst.c.appointment_id)).all()
    for row in rows:
        table.rows.append({
            "visit": row.appointment_id, "endpoint": row.name,
            "ehr_appointment_id": row.ehr_appointment_id or row.filler_id,
            "start": row.start_at, "department": row.department_display,
            "people": row.people, "call_seconds": int(row.samples) * SAMPLE_SECONDS,
            "mos": _round(row.mos_sum / row.mos_n if row.mos_n else None, 2),
            "poor_share": row.poor / row.samples if row.samples else None,
            "rtt_ms": _round(row.rtt_sum / row.rtt_n if row.rtt_n else None),
            "loss_pct": _round(row.loss_sum / row.loss_n if row.loss_n else None, 2),
            "relayed": labelled("yes" if row.relayed else "no", NAME_LABELS)})
    return table


# --- one visit's timeline ----------------------------------------------------------------

@dataclass(frozen=True)
class TimelineEvent:
    at: datetime
    person: str
    kind: str  # joined, waiting, admitted, left_lobby, disconnected


@dataclass(frozen=True)
class TimelineMinute:
    minute: datetime
    person: str
    samples: int
    rtt_ms: float | None
    jitter_ms: float | None
    loss_pct: float | None
    bitrate_kbps: float | None
    mos: float | None
    relayed: bool


@dataclass(frozen=True)
class Timeline:
    appointment_id: int
    endpoint: str
    timezone: str
    ehr_appointment_id: str | None
    start_at: datetime
    department: str | None
    people: list[tuple[str, str]]  # (label, role)
    events: list[TimelineEvent]
    minutes: list[TimelineMinute]


ROLE_LABELS = {"patient": _l("patient"), "provider": _l("provider"),
               "interpreter": _l("interpreter"), "guest": _l("guest")}


def person_labels(participants: list[Participant]) -> dict[int, str]:
    """"patient", "provider 2": a role (in the reader's language), numbered when the visit
    has several of it."""
    counts: dict[str, int] = defaultdict(int)
    for participant in participants:
        counts[participant.role] += 1
    seen: dict[str, int] = defaultdict(int)
    labels = {}
    for participant in sorted(participants, key=lambda p: p.id):
        seen[participant.role] += 1
        role = str(ROLE_LABELS.get(participant.role, participant.role))
        labels[participant.id] = role if counts[participant.role] == 1 \
            else f"{role} {seen[participant.role]}"
    return labels


def _mean(samples: list[CallQualitySample], column: str) -> float | None:
    values = [getattr(x, column) for x in samples if getattr(x, column) is not None]
    return round(sum(values) / len(values), 2) if values else None


def visit_timeline(appointment_id: int) -> Timeline | None:
    """Joins, the lobby and admits, disconnects and quality minute by minute of one visit;
    None when there is no such visit."""
    appointment = db.session.get(Appointment, appointment_id)
    if appointment is None:
        return None
    people = list(appointment.participants)
    labels = person_labels(people)
    ids = list(labels)
    events: list[TimelineEvent] = []
    for participant_id, kind, at in db.session.execute(
            sa.select(PresenceEvent.participant_id, PresenceEvent.kind, PresenceEvent.at)
            .where(PresenceEvent.participant_id.in_(ids))):
        events.append(TimelineEvent(at, labels[participant_id],
                                    "joined" if kind == "connected" else "disconnected"))
    for entry in db.session.execute(
            sa.select(LobbyEntry).where(LobbyEntry.participant_id.in_(ids))).scalars():
        person = labels[entry.participant_id]
        events.append(TimelineEvent(entry.entered_at, person, "waiting"))
        if entry.admitted_at:
            events.append(TimelineEvent(entry.admitted_at, person, "admitted"))
        elif entry.left_at:
            events.append(TimelineEvent(entry.left_at, person, "left_lobby"))
    events.sort(key=lambda event: (event.at, event.person))
    s = CallQualitySample
    minutes: dict[tuple[datetime, int], list[CallQualitySample]] = defaultdict(list)
    for sample in db.session.execute(
            sa.select(s).where(s.participant_id.in_(ids)).order_by(s.at)).scalars():
        minutes[(sample.at.replace(second=0, microsecond=0), sample.participant_id)].append(
            sample)
    rows = []
    for (minute, participant_id), samples in sorted(minutes.items(),
                                                     key=lambda item: (item[0][0],
                                                                       labels[item[0][1]])):
        rows.append(TimelineMinute(
            minute, labels[participant_id], len(samples), _mean(samples, "rtt_ms"),
            _mean(samples, "jitter_ms"), _mean(samples, "packet_loss_pct"),
            _mean(samples, "bitrate_in_kbps"), _mean(samples, "mos"),
            any(x.relayed for x in samples)))
    endpoint = appointment.endpoint
    return Timeline(appointment.id, endpoint.name, endpoint.site_timezone,
                    appointment.ehr_appointment_id or appointment.filler_id,
                    appointment.start_at, appointment.department_display,
                    [(labels[p.id], p.role) for p in sorted(people, key=lambda p: p.id)],
                    events, rows)


framework.register(framework.ReportKind(
    "quality", _l("Call quality"),
    _l("Round-trip time, jitter, loss, bitrate and MOS of calls; TURN; by role and browser"),
    build, filters=("endpoint", "department", "provider"),
    template="reports/quality.html"))
