"""Call quality as stored: the MOS estimate, coarse browser and OS families, the per-person
rollup updated with every sample, and the retention purge of old samples.

Browsers send a sample every 10 s (``call_quality``); each is kept as a row for the visit
timeline and summed into the participant's ``CallQualityRollup`` in the same transaction,
so the quality report reads one row per person in a call, never the samples.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from extensions import db
from ops.sql import upsert
from visits.models import (
    Appointment,
    CallQualityDay,
    CallQualityRollup,
    CallQualitySample,
    CallQualityVisit,
    Participant,
)

log = logging.getLogger(__name__)

# A sample is poor below this estimated MOS: the device test's fail limit (VV_DEVICE_TEST_MOS
# "3.6,3.1"), where a conversation is audibly impaired.
POOR_MOS = 3.1
# Upper edges of each metric's distribution buckets; a value at or above the last edge
# falls in the fifth bucket. The limits the device test grades by are among them.
BUCKETS: dict[str, tuple[float, float, float, float]] = {
    "rtt": (100, 200, 300, 500),          # ms
    "jitter": (10, 20, 30, 50),           # ms
    "loss": (1, 3, 5, 8),                 # percent
    "bitrate": (150, 300, 500, 1000),     # kbit/s received
    "mos": (2.5, 3.1, 3.6, 4.0),
}
# Sample column behind each metric.
SAMPLE_COLUMNS = {"rtt": "rtt_ms", "jitter": "jitter_ms", "loss": "packet_loss_pct",
                  "bitrate": "bitrate_in_kbps", "mos": "mos"}
# What call_quality_visits sums of each sample.
_VISIT_SUMS = ("samples", "poor", "rtt_sum", "rtt_n", "loss_sum", "loss_n", "mos_sum", "mos_n")
# ua-parser's families -> ours; anything else is "Other".
_BROWSERS = {"Chrome": "Chrome", "Chrome Mobile": "Chrome", "Chrome Mobile iOS": "Chrome",
             "Chromium": "Chrome", "HeadlessChrome": "Chrome", "Chrome Mobile WebView": "Chrome",
             "Edge": "Edge", "Edge Mobile": "Edge", "Firefox": "Firefox",
             "Firefox Mobile": "Firefox", "Firefox iOS": "Firefox", "Safari": "Safari",
             "Mobile Safari": "Safari", "Mobile Safari UI/WKWebView": "Safari",
             "Samsung Internet": "Samsung Internet", "Opera": "Opera"}
_SYSTEMS = {"Windows": "Windows", "Mac OS X": "macOS", "iOS": "iOS", "Android": "Android",
            "Linux": "Linux", "Ubuntu": "Linux", "Fedora": "Linux", "Chrome OS": "ChromeOS",
            "ChromeOS": "ChromeOS"}


def estimate_mos(rtt_ms: float | None, jitter_ms: float | None,
                 loss_pct: float | None) -> float | None:
    """The device test's simplified E-model (docs/device-test.md, "Estimated MOS"); None
    without an RTT. Missing jitter or loss count as none."""
    if rtt_ms is None:
        return None
    latency = rtt_ms + 2 * (jitter_ms or 0) + 10
    r = 93.2 - latency / 40 if latency < 160 else 93.2 - (latency - 120) / 10
    r = min(100.0, max(0.0, r - 2.5 * (loss_pct or 0)))
    mos = 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)
    return round(min(5.0, max(1.0, mos)), 2)


@lru_cache(maxsize=512)
def families(user_agent: str | None) -> tuple[str | None, str | None]:
    """(browser family, OS family) of a User-Agent, coarse ("Chrome", "iOS", "Other");
    only these are stored, never the header."""
    if not user_agent:
        return None, None
    from ua_parser import parse  # the rules load on first use, not at import

    result = parse(user_agent[:512])
    browser = _BROWSERS.get(result.user_agent.family, "Other") if result.user_agent else "Other"
    system = _SYSTEMS.get(result.os.family, "Other") if result.os else "Other"
    return browser, system


def bucket(metric: str, value: float | None) -> int | None:
    """Index 0-4 of ``value`` in ``BUCKETS[metric]``."""
    if value is None:
        return None
    for index, edge in enumerate(BUCKETS[metric]):
        if value < edge:
            return index
    return 4


def add_to_rollup(sample: CallQualitySample) -> None:
    """Sum ``sample`` (flushed) into its participant's rollup, and into that call's day
    (``call_quality_days``) and visit (``call_quality_visits``): a conditional UPDATE or an
    INSERT each. The caller commits."""
    poor = int(sample.mos is not None and sample.mos < POOR_MOS)
    relayed = int(bool(sample.relayed))
    measured = {metric: getattr(sample, SAMPLE_COLUMNS[metric]) for metric in BUCKETS}
    deltas: dict[str, float] = {"samples": 1, "poor": poor}
    for metric, value in measured.items():
        if value is not None:
            deltas[f"{metric}_sum"] = value
            deltas[f"{metric}_n"] = 1
            deltas[f"{metric}_b{bucket(metric, value)}"] = 1
    table = CallQualityRollup.__table__
    c = table.c
    person = db.session.execute(
        table.update().where(c.participant_id == sample.participant_id)
        .values({"last_at": sample.at, "relayed": c.relayed + relayed,
                 **{name: c[name] + delta for name, delta in deltas.items()}})
        .returning(c.appointment_id, c.endpoint_id, c.day, c.role, c.browser_family,
                   c.os_family, c.relayed)).first()
    if person is None:
        person = _first_sample(sample, deltas, relayed)
        if person is None:  # a second tab's first sample won the insert: add to its row
            add_to_rollup(sample)
            return
        new_person, newly_relayed = 1, relayed
    else:
        new_person, newly_relayed = 0, int(relayed and person.relayed == 1)
    _add_to_day(person, deltas, new_person, newly_relayed)
    _add_to_visit(person, sample, deltas, new_person, newly_relayed)


def _first_sample(sample: CallQualitySample, deltas: dict[str, float], relayed: int):
    """Insert the participant's rollup; None when another process inserted it first."""
    participant = db.session.get(Participant, sample.participant_id)
    # The report's days are the endpoint's (its site time zone), like every report's.
    endpoint = participant.appointment.endpoint
    endpoint_id, zone = endpoint.id, endpoint.site_timezone
    row = {"participant_id": sample.participant_id,
           "appointment_id": participant.appointment_id, "endpoint_id": endpoint_id,
           "role": participant.role, "browser_family": sample.browser_family,
           "os_family": sample.os_family, "first_at": sample.at,
           "day": sample.at.astimezone(_zone(zone)).date(), "last_at": sample.at,
           "relayed": relayed, **deltas}
    try:
        with db.session.begin_nested():
            db.session.execute(CallQualityRollup.__table__.insert().values(row))
    except IntegrityError:
        return None
    return _Person(row["appointment_id"], endpoint_id, row["day"], participant.role,
                   sample.browser_family, sample.os_family, relayed)


@dataclass(frozen=True)
class _Person:
    appointment_id: int
    endpoint_id: int
    day: date
    role: str
    browser_family: str | None
    os_family: str | None
    relayed: int


def _add_to_day(person, deltas: dict[str, float], new_person: int, newly_relayed: int) -> None:
    c = CallQualityDay.__table__.c
    counts = {"people": new_person, "relayed_people": newly_relayed, **deltas}
    upsert(CallQualityDay,
            {"endpoint_id": person.endpoint_id, "day": person.day, "role": person.role,
             "browser_family": person.browser_family or "", "os_family": person.os_family or ""},
            counts, {name: c[name] + delta for name, delta in counts.items()})


def _add_to_visit(person, sample: CallQualitySample, deltas: dict[str, float],
                  new_person: int, newly_relayed: int) -> None:
    c = CallQualityVisit.__table__.c
    counts = {"people": new_person, "relayed": newly_relayed,
              **{name: deltas.get(name, 0) for name in _VISIT_SUMS}}
    mos_sum, mos_n = deltas.get("mos_sum", 0), deltas.get("mos_n", 0)
    changes = {name: c[name] + delta for name, delta in counts.items()}
    # SET reads the row as it was, on both databases: the new mean from the old sums.
    changes["mos_mean"] = sa.case((c.mos_n + mos_n > 0, (c.mos_sum + mos_sum) / (c.mos_n + mos_n)),
                                  else_=None)
    upsert(CallQualityVisit, {"appointment_id": person.appointment_id},
            {"endpoint_id": person.endpoint_id, "day": person.day, "first_at": sample.at,
             "mos_mean": mos_sum / mos_n if mos_n else None, **counts}, changes)


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def purge_samples(now: datetime, retention_days: int, batch: int = 10_000) -> int:
    """Delete samples older than ``retention_days``, ``batch`` rows per transaction so a
    large backlog never holds a long lock; returns how many. The rollups (sums, no
    timeline) stay. Commits."""
    cutoff = now - timedelta(days=retention_days)
    total = 0
    while True:
        ids = sa.select(CallQualitySample.id).where(CallQualitySample.at < cutoff).limit(batch)
        deleted = db.session.execute(
            sa.delete(CallQualitySample).where(CallQualitySample.id.in_(ids))
            .execution_options(synchronize_session=False)).rowcount
        db.session.commit()
        total += deleted
        if deleted < batch:
            break
    if total:
        log.info("old call-quality samples deleted",
                 extra={"samples": total, "retention_days": retention_days})
    return total


def rebuild_summaries() -> None:
    """Recompute ``call_quality_days`` and ``call_quality_visits`` from every person's
    rollup, for rollups written in bulk (``flask reports sample-data``) rather than through
    ``add_to_rollup``. Commits."""
    r = CallQualityRollup.__table__.c
    days = CallQualityDay.__table__
    visits = CallQualityVisit.__table__
    sums = ["samples", "poor", *(f"{m}_{p}" for m in BUCKETS for p in ("sum", "n")),
            *(f"{m}_b{i}" for m in BUCKETS for i in range(5))]
    relayed = sa.func.sum(sa.case((r.relayed > 0, 1), else_=0))
    db.session.execute(days.delete())
    db.session.execute(visits.delete())
    browser = sa.func.coalesce(r.browser_family, sa.literal_column("''"))
    system = sa.func.coalesce(r.os_family, sa.literal_column("''"))
    db.session.execute(days.insert().from_select(
        ["endpoint_id", "day", "role", "browser_family", "os_family", "people",
         "relayed_people", *sums],
        sa.select(r.endpoint_id, r.day, r.role, browser, system, sa.func.count(), relayed,
                  *(sa.func.sum(r[name]) for name in sums))
        .group_by(r.endpoint_id, r.day, r.role, browser, system)))
    mos_n = sa.func.sum(r.mos_n)
    db.session.execute(visits.insert().from_select(
        ["appointment_id", "endpoint_id", "day", "first_at", "people", "relayed",
         *_VISIT_SUMS, "mos_mean"],
        sa.select(r.appointment_id, sa.func.min(r.endpoint_id), sa.func.min(r.day),
                  sa.func.min(r.first_at), sa.func.count(), relayed,
                  *(sa.func.sum(r[name]) for name in _VISIT_SUMS),
                  sa.case((mos_n > 0, sa.func.sum(r.mos_sum) / mos_n), else_=None))
        .group_by(r.appointment_id)))
    db.session.commit()


def rollups_from_samples() -> int:
    """Sum the samples of every participant who has samples but no rollup (samples written
    in bulk: ``flask reports sample-data``) into rollups, then rebuild the day and visit
    rows; returns how many people. Commits."""
    s = CallQualitySample.__table__.c
    r = CallQualityRollup.__table__
    p = Participant.__table__.c
    a = Appointment.__table__.c
    columns = {"samples": sa.func.count(),
               "poor": sa.func.sum(sa.case((s.mos < POOR_MOS, 1), else_=0)),
               "relayed": sa.func.sum(sa.case((s.relayed.is_(True), 1), else_=0))}
    for metric, column in SAMPLE_COLUMNS.items():
        value = s[column]
        columns[f"{metric}_sum"] = sa.func.coalesce(sa.func.sum(value), 0)
        columns[f"{metric}_n"] = sa.func.count(value)
        edges = BUCKETS[metric]
        for index in range(5):
            low = value >= edges[index - 1] if index else sa.true()
            high = value < edges[index] if index < 4 else sa.true()
            columns[f"{metric}_b{index}"] = sa.func.sum(sa.case((sa.and_(low, high), 1),
                                                                else_=0))
    first = sa.func.min(s.at)
    query = (sa.select(s.participant_id, p.appointment_id, a.endpoint_id, p.role,
                       sa.func.max(s.browser_family), sa.func.max(s.os_family), first,
                       sa.func.max(s.at), *columns.values())
             .join(Participant.__table__, p.id == s.participant_id)
             .join(Appointment.__table__, a.id == p.appointment_id)
             .where(~sa.exists().where(r.c.participant_id == s.participant_id))
             .group_by(s.participant_id, p.appointment_id, a.endpoint_id, p.role))
    rows = db.session.execute(query).all()
    zones = {endpoint_id: _zone(zone) for endpoint_id, zone in db.session.execute(
        sa.text("SELECT id, site_timezone FROM ehr_endpoints"))}
    names = ["participant_id", "appointment_id", "endpoint_id", "role", "browser_family",
             "os_family", "first_at", "last_at", *columns]
    made = []
    for row in rows:
        values = dict(zip(names, row, strict=True))
        first_at = values["first_at"]
        if first_at.tzinfo is None:  # SQLite, in an aggregate the type is not applied
            first_at = first_at.replace(tzinfo=timezone.utc)
            values["first_at"] = first_at
            values["last_at"] = values["last_at"].replace(tzinfo=timezone.utc)
        values["day"] = first_at.astimezone(zones.get(values["endpoint_id"],
                                                      ZoneInfo("UTC"))).date()
        made.append(values)
    for start in range(0, len(made), 5000):
        db.session.execute(r.insert(), made[start:start + 5000])
    db.session.commit()
    rebuild_summaries()
    return len(made)
