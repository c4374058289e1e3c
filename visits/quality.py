"""Call quality as stored: the MOS estimate, coarse browser and OS families, the per-person
rollup updated with every sample, and the retention purge of old samples.

Browsers send a sample every 10 s (``call_quality``); each is kept as a row for the visit
timeline and summed into the participant's ``CallQualityRollup`` in the same transaction,
so the quality report reads one row per person in a call, never the samples.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta
from functools import lru_cache

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from extensions import db
from visits.models import Appointment, CallQualityRollup, CallQualitySample, Participant

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
    """Sum ``sample`` (flushed, with its participant) into that participant's rollup: one
    conditional UPDATE, or an INSERT for the first sample. The caller commits."""
    values = {SAMPLE_COLUMNS[m]: getattr(sample, SAMPLE_COLUMNS[m]) for m in BUCKETS}
    table = CallQualityRollup.__table__
    c = table.c
    changes: dict = {"samples": c.samples + 1, "last_at": sample.at}
    changes["poor"] = c.poor + (1 if sample.mos is not None and sample.mos < POOR_MOS else 0)
    changes["relayed"] = c.relayed + (1 if sample.relayed else 0)
    for metric in BUCKETS:
        value = values[SAMPLE_COLUMNS[metric]]
        if value is None:
            continue
        changes[f"{metric}_sum"] = c[f"{metric}_sum"] + value
        changes[f"{metric}_n"] = c[f"{metric}_n"] + 1
        column = f"{metric}_b{bucket(metric, value)}"
        changes[column] = c[column] + 1
    if sample.browser_family:
        changes["browser_family"] = sample.browser_family
        changes["os_family"] = sample.os_family
    updated = db.session.execute(
        table.update().where(c.participant_id == sample.participant_id).values(changes)).rowcount
    if updated:
        return
    participant = db.session.get(Participant, sample.participant_id)
    endpoint_id = db.session.execute(sa.select(Appointment.endpoint_id).where(
        Appointment.id == participant.appointment_id)).scalar_one()
    first = {"participant_id": sample.participant_id,
             "appointment_id": participant.appointment_id, "endpoint_id": endpoint_id,
             "role": participant.role, "browser_family": sample.browser_family,
             "os_family": sample.os_family, "first_at": sample.at, "last_at": sample.at,
             "samples": 1, "poor": int(sample.mos is not None and sample.mos < POOR_MOS),
             "relayed": int(bool(sample.relayed))}
    for metric in BUCKETS:
        value = values[SAMPLE_COLUMNS[metric]]
        if value is not None:
            first[f"{metric}_sum"] = value
            first[f"{metric}_n"] = 1
            first[f"{metric}_b{bucket(metric, value)}"] = 1
    try:
        with db.session.begin_nested():
            db.session.execute(table.insert().values(first))
    except IntegrityError:  # a second tab's first sample won the insert: add to its row
        db.session.execute(table.update().where(c.participant_id == sample.participant_id)
                           .values(changes))


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
