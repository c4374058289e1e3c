"""The usage report's settled visits summed per endpoint's clinic day: what a report over
more than ``EXACT_UP_TO`` settled visits reads instead of a line per visit (a year of a
million visits: 8.7 s as lines, well under a second as sums; docs/reports.md).

A row (reports/models.py) counts one endpoint's day and department, or that and one first
provider, or the patients of one language: every count the report shows, and per measure
(lobby wait, duration, lateness) the least and greatest value and a count per bucket. Sums
add up exactly, so counts, shares, the lobby-wait histogram, routes and languages are the
same as from the lines; a median or 90th percentile is estimated from the buckets
(``estimate``): exact at the least and greatest value, and otherwise the values of a
bucket are taken as evenly spread in it, so an estimate is off by at most the width of
the wider of the buckets holding the two values it lies between (``estimate_bound``: 15 s
under a minute, 30 s to 5 minutes, a minute to 15, 2 to 10 minutes up to an hour), and in
practice much less. Those two values are in the same bucket or neighbouring ones unless
the group is small: the median of eight visits may lie between a visit admitted early and
one admitted late.

reports/usage.py decides when to read them and fills them (``replace_days``) from the kept
facts as visits settle; nothing here knows how a visit is counted (``add`` takes the
counted visit).
"""
from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa

from extensions import db
from reports.models import (
    MEASURE_EDGES,
    SUM_COUNTS,
    UsageDayLanguages,
    UsageDaySums,
    UsageProviderDaySums,
    bucket_columns,
)
from visits.models import JoinRoute

# Reports over more settled visits than this read the sums; fewer, a line per visit, so
# every median is exact (20,000 lines take about 0.2 s on PostgreSQL).
EXACT_UP_TO = 20_000

DAYS = UsageDaySums.__table__
PROVIDER_DAYS = UsageProviderDaySums.__table__
LANGUAGES = UsageDayLanguages.__table__
_ROUTES = {JoinRoute.SMS: "route_sms", JoinRoute.MYCHART: "route_mychart",
           JoinRoute.GUEST: "route_guest"}
_BUCKETS = {measure: bucket_columns(measure) for measure in MEASURE_EDGES}
# Counted's figure names for the count columns they add to.
_FLAGS = (("scheduled", "scheduled"), ("started", "started"), ("completed", "completed"),
          ("no_show", "no_shows"), ("left_before_admitted", "left_before_admitted"),
          ("provider_never_joined", "provider_never_joined"), ("joined", "patients_joined"),
          ("tested", "device_tested"), ("passed", "device_passed"))

Sums = dict[str, Any]


def empty() -> Sums:
    sums: Sums = dict.fromkeys(SUM_COUNTS, 0)
    for measure, names in _BUCKETS.items():
        sums[f"{measure}_min"] = sums[f"{measure}_max"] = None
        sums.update(dict.fromkeys(names, 0))
    return sums


def add(groups: dict[Any, Sums], key: Any, counted: Any, route: str | None) -> None:
    """Count one visit (reports/usage.py ``Counted``) in ``groups[key]``."""
    sums = groups.get(key)
    if sums is None:
        sums = groups[key] = empty()
    for flag, column in _FLAGS:
        sums[column] += getattr(counted, flag)
    sums["cancelled"] += not counted.scheduled
    if counted.joined:
        sums[_ROUTES.get(route, "route_none")] += 1
    for measure, edges in MEASURE_EDGES.items():
        value = getattr(counted, measure)
        if value is None:
            continue
        sums[_BUCKETS[measure][max(0, bisect_right(edges, value) - 1)]] += 1
        least, most = sums[f"{measure}_min"], sums[f"{measure}_max"]
        sums[f"{measure}_min"] = value if least is None else min(least, value)
        sums[f"{measure}_max"] = value if most is None else max(most, value)


def merge(into: Sums, other: Mapping[str, Any]) -> Sums:
    """Add ``other`` to ``into`` (a database row's NULL counts as nothing)."""
    for name in SUM_COUNTS:
        into[name] += other[name] or 0
    for measure, names in _BUCKETS.items():
        for name in names:
            into[name] += other[name] or 0
        for name, pick in ((f"{measure}_min", min), (f"{measure}_max", max)):
            if other[name] is not None:
                into[name] = other[name] if into[name] is None else pick(into[name], other[name])
    return into


@dataclass(frozen=True)
class _Rank:
    """Where a rank of ``measure``'s values lies in its sums: its bucket's bounds (the
    first and last filled bucket narrowed to the least and greatest value), its place in
    that bucket, and whether the bucket is the first or last filled one."""

    low: float
    high: float
    place: int
    count: int
    first: bool
    last: bool

    def value(self) -> float:
        """The rank's value, the bucket's values taken as evenly spread in it."""
        low, high, place, count = self.low, self.high, self.place, self.count
        if self.first and self.last:
            return low + (high - low) * place / (count - 1) if count > 1 else low
        if self.first:
            return low + (high - low) * place / count
        if self.last:
            return low + (high - low) * (place + 1) / count
        return low + (high - low) * (place + 0.5) / count


def _ranks(sums: Mapping[str, Any], measure: str, share: float) -> tuple[list[_Rank], float]:
    """The one or two ranks the ``share`` percentile lies between (as PostgreSQL's
    ``percentile_cont`` takes them), and how far it lies from the first to the second."""
    edges, counts = MEASURE_EDGES[measure], [sums[name] for name in _BUCKETS[measure]]
    filled = [index for index, count in enumerate(counts) if count]
    if not filled:
        return [], 0.0
    first, last = filled[0], filled[-1]

    def rank_at(rank: int) -> _Rank:
        for index in filled:
            if rank < counts[index]:
                return _Rank(sums[f"{measure}_min"] if index == first else edges[index],
                             sums[f"{measure}_max"] if index == last else edges[index + 1],
                             rank, counts[index], index == first, index == last)
            rank -= counts[index]
        raise AssertionError("rank beyond the counts")

    position = (sum(counts) - 1) * share
    below = int(position)
    ranks = [rank_at(below)] + ([rank_at(below + 1)] if position > below else [])
    return ranks, position - below


def estimate(sums: Mapping[str, Any], measure: str, share: float) -> float | None:
    """The ``share`` percentile of ``measure``, interpolated between the two nearest ranks
    like PostgreSQL's ``percentile_cont``, each rank's value placed in its bucket: the
    least and greatest values where they are, the others evenly spread in their bucket."""
    ranks, between = _ranks(sums, measure, share)
    if not ranks:
        return None
    found = ranks[0].value()
    if len(ranks) == 2:
        found += (ranks[1].value() - found) * between
    return found


def estimate_bound(sums: Mapping[str, Any], measure: str, share: float) -> float | None:
    """How far ``estimate`` may be from the exact percentile: the width of the wider of the
    buckets holding the one or two ranks it lies between (0 when those are the only
    values)."""
    ranks, _between = _ranks(sums, measure, share)
    return max(rank.high - rank.low for rank in ranks) if ranks else None


def wait_histogram(sums: Mapping[str, Any], edges: Sequence[float]) -> list[int]:
    """The lobby-wait counts per report bucket (``edges``, each one of ``SPAN_EDGES``)."""
    found = [0] * len(edges)
    for index, name in enumerate(_BUCKETS["wait"]):
        lower = MEASURE_EDGES["wait"][index]
        found[max(0, bisect_right(edges, lower) - 1)] += sums[name]
    return found


def routes(sums: Mapping[str, Any]) -> dict[str | None, int]:
    """Patients who connected per join route (None: not recorded)."""
    found: dict[str | None, int] = {route: sums[column] for route, column in _ROUTES.items()}
    found[None] = sums["route_none"]
    return found


# --- reading ---------------------------------------------------------------------------------

def _within(table: sa.Table, endpoint_ids: Iterable[int], first: date, last: date,
            department: str | None) -> list[sa.ColumnElement[bool]]:
    conditions = [table.c.endpoint_id.in_(sorted(endpoint_ids)), table.c.day >= first,
                  table.c.day <= last]
    if department:
        conditions.append(table.c.department == department)
    return conditions


def visits_counted(endpoint_ids: Iterable[int], first: date, last: date,
                   department: str | None) -> int:
    """How many visits (cancelled ones too) the sums hold for these days."""
    return db.session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(DAYS.c.scheduled + DAYS.c.cancelled), 0))
        .where(*_within(DAYS, endpoint_ids, first, last, department))).scalar()


def grouped(table: sa.Table, by: Sequence[str], endpoint_ids: Iterable[int], first: date,
            last: date, department: str | None) -> dict[tuple, Sums]:
    """The sums of ``table`` per value of the ``by`` columns (none: one total), for these
    endpoints' days (and department)."""
    totals = [sa.func.sum(table.c[name]).label(name)
              for name in (*SUM_COUNTS, *(n for names in _BUCKETS.values() for n in names))]
    for measure in MEASURE_EDGES:
        totals += [sa.func.min(table.c[f"{measure}_min"]).label(f"{measure}_min"),
                   sa.func.max(table.c[f"{measure}_max"]).label(f"{measure}_max")]
    keys = [table.c[name] for name in by]
    query = sa.select(*keys, *totals).where(
        *_within(table, endpoint_ids, first, last, department))
    if keys:
        query = query.group_by(*keys)
    found: dict[tuple, Sums] = {}
    for row in db.session.execute(query).mappings():
        if row["scheduled"] is None:  # no row at all: the total of nothing
            continue
        found[tuple(row[name] for name in by)] = merge(empty(), row)
    return found


def languages(endpoint_ids: Iterable[int], first: date, last: date,
              department: str | None) -> dict[str | None, int]:
    query = (sa.select(LANGUAGES.c.language, sa.func.sum(LANGUAGES.c.patients))
             .where(*_within(LANGUAGES, endpoint_ids, first, last, department))
             .group_by(LANGUAGES.c.language))
    return {language: int(count) for language, count in db.session.execute(query)}


# --- filling ---------------------------------------------------------------------------------

def replace_days(endpoint_ids: Iterable[int], first: date, last: date,
                 days: Mapping[tuple, Sums], providers: Mapping[tuple, Sums],
                 spoken: Mapping[tuple, int]) -> None:
    """These endpoints' days ``first``..``last`` now hold exactly these sums: ``days`` by
    (endpoint id, day, department), ``providers`` by that and (provider's EHR id, name),
    ``spoken`` patients by (endpoint id, day, department, language). Rows of those days
    already there are replaced, so counting a day again is harmless."""
    ids = sorted(endpoint_ids)
    for table in (DAYS, PROVIDER_DAYS, LANGUAGES):
        db.session.execute(table.delete().where(*_within(table, ids, first, last, None)))
    if days:
        db.session.execute(DAYS.insert(), [
            {"endpoint_id": e, "day": d, "department": dept, **sums}
            for (e, d, dept), sums in days.items()])
    if providers:
        db.session.execute(PROVIDER_DAYS.insert(), [
            {"endpoint_id": e, "day": d, "department": dept, "provider_ehr_id": ehr_id,
             "provider_name": name, **sums}
            for (e, d, dept, ehr_id, name), sums in providers.items()])
    if spoken:
        db.session.execute(LANGUAGES.insert(), [
            {"endpoint_id": e, "day": d, "department": dept, "language": language,
             "patients": patients}
            for (e, d, dept, language), patients in spoken.items()])


def figures(sums: Mapping[str, Any]) -> dict[str, Any]:
    """The report's figures of one group (reports/usage.py ``metrics``'s keys, without the
    waits themselves): counts as summed, times estimated from the buckets."""
    found = {name: sums[name] for name in (
        "scheduled", "started", "completed", "no_shows", "left_before_admitted",
        "provider_never_joined", "cancelled", "patients_joined", "device_tested",
        "device_passed")}
    for measure in MEASURE_EDGES:
        found[f"{measure}_median_seconds"] = estimate(sums, measure, 0.5)
        found[f"{measure}_p90_seconds"] = estimate(sums, measure, 0.9)
    joined, tested = sums["patients_joined"], sums["device_tested"]
    found["device_tested_share"] = tested / joined if joined else None
    found["device_pass_rate"] = sums["device_passed"] / tested if tested else None
    return found
