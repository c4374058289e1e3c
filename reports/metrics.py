"""Integration health on ``/metrics``: a collector that asks the database at each scrape,
with one aggregate query per source (endpoints, write-backs, HL7 receipts, token
failures), so every server process reports the same figures. Labels are endpoint names
and ACK codes, never anything about a patient."""
from __future__ import annotations

import logging
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app, has_app_context
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ehr.models import (
    BackendTokenFailure,
    EhrEndpoint,
    WritebackOutbox,
    WritebackResource,
    WritebackStatus,
)
from extensions import db
from hl7feed.models import Hl7AckCount
from reports.health import ACK_CODES, _aware
from visits.models import utcnow

log = logging.getLogger(__name__)


def _families() -> dict[str, GaugeMetricFamily | CounterMetricFamily]:
    return {
        "pending": GaugeMetricFamily(
            "vv_writebacks_pending", "EHR write-backs not yet delivered", labels=["endpoint"]),
        "failed": GaugeMetricFamily(
            "vv_writebacks_failed", "EHR write-backs given up on (dead letters)",
            labels=["endpoint"]),
        "oldest": GaugeMetricFamily(
            "vv_writeback_oldest_pending_seconds",
            "Age of the oldest write-back not yet delivered (0 when none)", labels=["endpoint"]),
        "dt_pending": GaugeMetricFamily(
            "vv_device_test_writebacks_pending",
            "Device-test results (Observations) not yet written back", labels=["endpoint"]),
        "dt_failed": GaugeMetricFamily(
            "vv_device_test_writebacks_failed",
            "Device-test results (Observations) given up on", labels=["endpoint"]),
        "hl7": CounterMetricFamily(
            "vv_hl7_messages", "HL7 messages acknowledged, by MSA-1 code",
            labels=["endpoint", "ack"]),
        "hl7_last": GaugeMetricFamily(
            "vv_hl7_last_message_timestamp_seconds",
            "When the last HL7 message arrived (Unix time; absent when none has)",
            labels=["endpoint"]),
        "token_recent": GaugeMetricFamily(
            "vv_backend_token_failures_recent",
            "Failed backend-services token requests within VV_REPORTS_HEALTH_ALERT_MINUTES",
            labels=["endpoint"]),
        "token_last": GaugeMetricFamily(
            "vv_backend_token_last_failure_timestamp_seconds",
            "When a backend-services token request last failed (Unix time; absent when none "
            "is kept)", labels=["endpoint"]),
    }


class IntegrationHealthCollector:
    """Read at scrape time inside the app (``/metrics``); outside one it reports nothing."""

    def describe(self):
        # Names only: registering must not query a database that is not there yet.
        return list(_families().values())

    def collect(self):
        if not has_app_context():
            return []
        try:
            return list(_collect())
        except Exception:  # noqa: BLE001  (a scrape must answer even with the database down)
            log.warning("integration health metrics unavailable", exc_info=True)
            return []


def _collect():
    now = utcnow()
    families = _families()
    names = dict(db.session.execute(sa.select(EhrEndpoint.id, EhrEndpoint.name)).all())
    counts: dict[str, dict[int, float]] = {key: {} for key in families}
    outbox = WritebackOutbox
    for endpoint_id, status, resource, count, oldest in db.session.execute(
            sa.select(outbox.endpoint_id, outbox.status, outbox.resource_type, sa.func.count(),
                      sa.func.min(outbox.created_at))
            .where(outbox.status.in_((WritebackStatus.PENDING.value,
                                      WritebackStatus.FAILED.value)))
            .group_by(outbox.endpoint_id, outbox.status, outbox.resource_type)):
        pending = status == WritebackStatus.PENDING
        key = "pending" if pending else "failed"
        counts[key][endpoint_id] = counts[key].get(endpoint_id, 0) + count
        if resource == WritebackResource.OBSERVATION:
            key = "dt_pending" if pending else "dt_failed"
            counts[key][endpoint_id] = counts[key].get(endpoint_id, 0) + count
        oldest = _aware(oldest)
        if pending and oldest is not None:
            age = max(0.0, (now - oldest).total_seconds())
            counts["oldest"][endpoint_id] = max(counts["oldest"].get(endpoint_id, 0.0), age)
    # Counted as each receipt got its code (hl7feed/services.py): a few rows, however
    # many messages were ever kept.
    acks = Hl7AckCount
    hl7: dict[tuple[int, str], int] = {}
    for endpoint_id, code, count, last in db.session.execute(
            sa.select(acks.endpoint_id, acks.ack_code, acks.messages, acks.last_received_at)):
        hl7[(endpoint_id, code)] = count
        last = _aware(last)
        if last is not None:
            counts["hl7_last"][endpoint_id] = max(counts["hl7_last"].get(endpoint_id, 0.0),
                                                  last.timestamp())
    since = now - timedelta(minutes=current_app.config["REPORTS_HEALTH_ALERT_MINUTES"])
    failures = BackendTokenFailure
    for endpoint_id, recent, last in db.session.execute(
            sa.select(failures.endpoint_id,
                      sa.func.count().filter(failures.at >= since), sa.func.max(failures.at))
            .group_by(failures.endpoint_id)):
        counts["token_recent"][endpoint_id] = recent
        last = _aware(last)
        if last is not None:
            counts["token_last"][endpoint_id] = last.timestamp()
    for endpoint_id, name in sorted(names.items(), key=lambda item: item[1]):
        for key in ("pending", "failed", "oldest", "dt_pending", "dt_failed", "token_recent"):
            families[key].add_metric([name], counts[key].get(endpoint_id, 0))
        for key in ("hl7_last", "token_last"):
            if endpoint_id in counts[key]:
                families[key].add_metric([name], counts[key][endpoint_id])
        for code in ACK_CODES:
            families["hl7"].add_metric([name, code], hl7.get((endpoint_id, code), 0))
    return families.values()


_collector = IntegrationHealthCollector()


def register() -> None:
    """Add the collector to the default registry once per process (apps are many in tests)."""
    if getattr(register, "done", False):
        return
    REGISTRY.register(_collector)
    register.done = True
