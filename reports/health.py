"""The integration health report: per EHR endpoint, what arrived over HL7 and how it was
acknowledged, what we still owe the EHR (write-backs pending and failed), and whether
our backend-services tokens are being refused.

Every figure is a count, a time or an error's class, read with a few aggregate queries
that the indexes answer (``ix_hl7_message_receipts_endpoint_id_received_at``,
``ix_writeback_outbox_status_next_attempt_at``, ``ix_backend_token_failures_endpoint_id_at``);
nothing here reads a payload or names a patient. Functions take their arguments
explicitly, so the page, the CLI, ``/metrics`` and the tests share them.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa

from ehr.models import (
    BackendTokenFailure,
    EhrEndpoint,
    WritebackOutbox,
    WritebackResource,
    WritebackStatus,
)
from extensions import db
from hl7feed.models import AckCode, Hl7MessageReceipt

# The longest range one report covers; a longer one is refused rather than scanned.
MAX_DAYS = 366
DEFAULT_DAYS = 7
ACK_CODES = tuple(code.value for code in AckCode)
_HTTP = re.compile(r"HTTP (\d{3})(?: ([a-z][a-z-]{0,39}))?")
_EXCEPTION = re.compile(r"\b([A-Z][A-Za-z]{0,50}(?:Error|Exception|Timeout))\b")
_OAUTH_ERROR = re.compile(r"[a-z_]{1,60}")
_TOKEN_CLASS = re.compile(r"[A-Za-z]{1,40}(?: (?:HTTP \d{3}|[a-z_]{1,60}))?")


class InvalidRange(ValueError):
    """The dates cannot make a report (unreadable, reversed, or too long)."""


@dataclass(frozen=True)
class DateRange:
    """Whole days, ``start`` to ``end`` inclusive, read in each endpoint's time zone."""

    start: date
    end: date

    @classmethod
    def parse(cls, start: str | None, end: str | None, today: date) -> DateRange:
        """From ``YYYY-MM-DD`` strings; missing ones give the last ``DEFAULT_DAYS`` days."""
        try:
            last = date.fromisoformat(end) if end else today
            first = date.fromisoformat(start) if start else last - timedelta(days=DEFAULT_DAYS - 1)
        except ValueError:
            raise InvalidRange("dates are written YYYY-MM-DD") from None
        if first > last:
            raise InvalidRange("the first day is after the last")
        if (last - first).days >= MAX_DAYS:
            raise InvalidRange(f"a report covers at most {MAX_DAYS} days")
        return cls(first, last)

    def bounds(self, zone: ZoneInfo) -> tuple[datetime, datetime]:
        """[start of the first day, start of the day after the last) in ``zone``."""
        return (datetime.combine(self.start, time(0), tzinfo=zone),
                datetime.combine(self.end + timedelta(days=1), time(0), tzinfo=zone))


@dataclass
class EndpointHealth:
    """One endpoint's row of the report; the CSV and JSON columns are these fields."""

    endpoint: str
    timezone: str
    hl7_last_received_at: datetime | None = None
    hl7_aa: int = 0
    hl7_ae: int = 0
    hl7_ar: int = 0
    writebacks_pending: int = 0
    writebacks_failed: int = 0
    oldest_pending_created_at: datetime | None = None
    oldest_pending_seconds: int | None = None
    last_error: str | None = None
    device_tests_pending: int = 0
    device_tests_failed: int = 0
    token_failures: int = 0
    token_last_failure_at: datetime | None = None
    token_last_error: str | None = None


@dataclass(frozen=True)
class HealthReport:
    """The report for ``days`` as of ``now``; ``alerts`` name what fails too long."""

    days: DateRange
    now: datetime
    rows: list[EndpointHealth]
    alert_minutes: int
    alerts: list[Alert] = field(default_factory=list)


@dataclass(frozen=True)
class Alert:
    """Something failing longer than the threshold: ``kind`` is ``writeback_pending``
    (the oldest pending write-back is older) or ``token_failures`` (token requests failed
    within it)."""

    endpoint: str
    kind: str
    since: datetime | None


# Columns per table of the page, for ``?format=csv&table=``; "all" is every field.
TABLES: dict[str, tuple[str, ...]] = {
    "hl7": ("endpoint", "hl7_last_received_at", "hl7_aa", "hl7_ae", "hl7_ar"),
    "writebacks": ("endpoint", "writebacks_pending", "writebacks_failed",
                   "oldest_pending_created_at", "oldest_pending_seconds", "last_error"),
    "device_tests": ("endpoint", "device_tests_pending", "device_tests_failed"),
    "tokens": ("endpoint", "token_failures", "token_last_failure_at", "token_last_error"),
}
ALL_COLUMNS = tuple(f.name for f in fields(EndpointHealth))


def zone_of(name: str | None) -> ZoneInfo:
    """The endpoint's clinic time zone; UTC when unset or unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def error_summary(text: str | None) -> str | None:
    """A stored error reduced to its class: an HTTP status (with the OperationOutcome code
    the outbox keeps), an exception's name, ``timeout``, an OAuth error code; anything else
    is just ``error``. The outbox keeps no bodies, but a token error quotes the EHR's
    message, so only these known shapes pass."""
    if not text:
        return None
    token = text.startswith("token:")
    rest = text.removeprefix("token:").strip()
    http = _HTTP.search(rest)
    exception = _EXCEPTION.search(rest)
    if http:
        summary = f"HTTP {http.group(1)}" + (f" {http.group(2)}" if http.group(2) else "")
    elif exception:
        summary = exception.group(1)
    elif "timeout" in rest.lower():
        summary = "timeout"
    elif _OAUTH_ERROR.fullmatch(rest.removeprefix("token request refused: ")):
        summary = rest.removeprefix("token request refused: ")
    else:
        summary = "error"
    return f"token: {summary}" if token else summary


def _token_error(text: str | None) -> str | None:
    """A recorded token failure class (``backend_auth.failure_class``), checked again."""
    if not text:
        return None
    return text if _TOKEN_CLASS.fullmatch(text) else "error"


def endpoints(name: str | None = None) -> list[EhrEndpoint]:
    """Every endpoint by name, or the one named (none when it does not exist)."""
    query = db.select(EhrEndpoint).order_by(EhrEndpoint.name)
    if name:
        query = query.where(EhrEndpoint.name == name)
    return list(db.session.execute(query).scalars())


def health_report(days: DateRange, now: datetime, *, endpoint: str | None = None,
                  alert_minutes: int = 15) -> HealthReport:
    """The integration health of ``endpoint`` (or all) over ``days``, as of ``now``.

    HL7 ACK counts and token failures are counted within the range, each endpoint's days
    read in its own time zone; write-backs are as they stand at ``now``."""
    chosen = endpoints(endpoint)
    rows = {e.id: EndpointHealth(endpoint=e.name, timezone=zone_of(e.site_timezone).key)
            for e in chosen}
    if not rows:
        return HealthReport(days, now, [], alert_minutes)
    ids = list(rows)
    by_zone: dict[str, list[int]] = {}
    for e in chosen:
        by_zone.setdefault(rows[e.id].timezone, []).append(e.id)
    for zone_name, zone_ids in by_zone.items():
        start, stop = days.bounds(ZoneInfo(zone_name))
        _add_acks(rows, zone_ids, start, stop)
        _add_token_failures(rows, zone_ids, start, stop)
    _add_last_received(rows, ids)
    _add_writebacks(rows, ids, now)
    report = HealthReport(days, now, list(rows.values()), alert_minutes)
    report.alerts.extend(alerts_for(report.rows, now, alert_minutes))
    return report


def _add_acks(rows: dict[int, EndpointHealth], ids: list[int], start: datetime,
              stop: datetime) -> None:
    receipts = Hl7MessageReceipt
    result = db.session.execute(
        sa.select(receipts.endpoint_id, receipts.ack_code, sa.func.count())
        .where(receipts.endpoint_id.in_(ids), receipts.received_at >= start,
               receipts.received_at < stop, receipts.ack_code.is_not(None))
        .group_by(receipts.endpoint_id, receipts.ack_code))
    for endpoint_id, code, count in result:
        if code in ACK_CODES:
            setattr(rows[endpoint_id], f"hl7_{code.lower()}", count)


def _add_last_received(rows: dict[int, EndpointHealth], ids: list[int]) -> None:
    """The last message ever received, one index probe per endpoint (a correlated MAX)."""
    receipts = Hl7MessageReceipt
    last = (sa.select(sa.func.max(receipts.received_at))
            .where(receipts.endpoint_id == EhrEndpoint.id).scalar_subquery())
    for endpoint_id, received in db.session.execute(
            sa.select(EhrEndpoint.id, last).where(EhrEndpoint.id.in_(ids))):
        rows[endpoint_id].hl7_last_received_at = _aware(received)


def _add_writebacks(rows: dict[int, EndpointHealth], ids: list[int], now: datetime) -> None:
    """Pending and failed rows only (sent rows, the bulk, are never read)."""
    outbox = WritebackOutbox
    open_statuses = (WritebackStatus.PENDING.value, WritebackStatus.FAILED.value)
    result = db.session.execute(
        sa.select(outbox.endpoint_id, outbox.status, outbox.resource_type, sa.func.count(),
                  sa.func.min(outbox.created_at))
        .where(outbox.status.in_(open_statuses), outbox.endpoint_id.in_(ids))
        .group_by(outbox.endpoint_id, outbox.status, outbox.resource_type))
    for endpoint_id, status, resource, count, oldest in result:
        row = rows[endpoint_id]
        oldest = _aware(oldest)
        if status == WritebackStatus.PENDING:
            row.writebacks_pending += count
            if oldest and (row.oldest_pending_created_at is None
                           or oldest < row.oldest_pending_created_at):
                row.oldest_pending_created_at = oldest
        else:
            row.writebacks_failed += count
        if resource == WritebackResource.OBSERVATION:
            if status == WritebackStatus.PENDING:
                row.device_tests_pending += count
            else:
                row.device_tests_failed += count
    for row in rows.values():
        if row.oldest_pending_created_at is not None:
            row.oldest_pending_seconds = max(
                0, int((now - row.oldest_pending_created_at).total_seconds()))
    # The newest error among the rows still owed: the highest id that has one.
    newest = (sa.select(sa.func.max(outbox.id))
              .where(outbox.status.in_(open_statuses), outbox.endpoint_id.in_(ids),
                     outbox.last_error.is_not(None))
              .group_by(outbox.endpoint_id))
    for endpoint_id, error in db.session.execute(
            sa.select(outbox.endpoint_id, outbox.last_error).where(outbox.id.in_(newest))):
        rows[endpoint_id].last_error = error_summary(error)


def _add_token_failures(rows: dict[int, EndpointHealth], ids: list[int], start: datetime,
                        stop: datetime) -> None:
    failures = BackendTokenFailure
    result = db.session.execute(
        sa.select(failures.endpoint_id, sa.func.count(), sa.func.max(failures.at))
        .where(failures.endpoint_id.in_(ids), failures.at >= start, failures.at < stop)
        .group_by(failures.endpoint_id))
    for endpoint_id, count, last in result:
        rows[endpoint_id].token_failures = count
        rows[endpoint_id].token_last_failure_at = _aware(last)
    newest = (sa.select(sa.func.max(failures.id))
              .where(failures.endpoint_id.in_(ids), failures.at >= start, failures.at < stop)
              .group_by(failures.endpoint_id))
    for endpoint_id, error in db.session.execute(
            sa.select(failures.endpoint_id, failures.error).where(failures.id.in_(newest))):
        rows[endpoint_id].token_last_error = _token_error(error)


def _aware(value: datetime | None) -> datetime | None:
    """Aggregates (MIN/MAX) skip the column type: SQLite hands back naive UTC text."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value


# --- alerts (the admin home's banner) --------------------------------------------------------

def current_alerts(now: datetime, alert_minutes: int) -> list[Alert]:
    """What has been failing longer than ``alert_minutes`` at ``now``, for every endpoint:
    a write-back pending since before then, or token requests failing within it. Two
    indexed queries; cheap enough for every load of the admin home."""
    since = now - timedelta(minutes=alert_minutes)
    outbox, failures = WritebackOutbox, BackendTokenFailure
    found: list[Alert] = []
    for name, oldest in db.session.execute(
            sa.select(EhrEndpoint.name, sa.func.min(outbox.created_at))
            .join(EhrEndpoint, EhrEndpoint.id == outbox.endpoint_id)
            .where(outbox.status == WritebackStatus.PENDING, outbox.created_at < since)
            .group_by(EhrEndpoint.name).order_by(EhrEndpoint.name)):
        found.append(Alert(name, "writeback_pending", _aware(oldest)))
    for name, first in db.session.execute(
            sa.select(EhrEndpoint.name, sa.func.min(failures.at))
            .join(EhrEndpoint, EhrEndpoint.id == failures.endpoint_id)
            .where(failures.at >= since).group_by(EhrEndpoint.name).order_by(EhrEndpoint.name)):
        found.append(Alert(name, "token_failures", _aware(first)))
    return found


def alerts_for(rows: list[EndpointHealth], now: datetime, alert_minutes: int) -> list[Alert]:
    """The same alerts as ``current_alerts``, for the endpoints of a report."""
    names = {row.endpoint for row in rows}
    return [alert for alert in current_alerts(now, alert_minutes) if alert.endpoint in names]


# --- output ----------------------------------------------------------------------------------

def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def as_dicts(report: HealthReport, columns: tuple[str, ...] = ALL_COLUMNS) -> list[dict]:
    """The rows as plain dicts (ISO 8601 UTC times), only ``columns``."""
    out = []
    for row in report.rows:
        values = asdict(row)
        out.append({key: _plain(values[key]) for key in columns})
    return out


def as_json(report: HealthReport) -> dict:
    """The whole report as JSON-ready data."""
    return {
        "report": "health", "from": report.days.start.isoformat(),
        "to": report.days.end.isoformat(), "generated_at": report.now.isoformat(),
        "alert_minutes": report.alert_minutes,
        "endpoints": as_dicts(report),
        "alerts": [{"endpoint": a.endpoint, "kind": a.kind,
                    "since": a.since.isoformat() if a.since else None} for a in report.alerts],
    }


# A spreadsheet runs a cell that starts with one of these as a formula; names and error
# texts come from EHRs and carriers, so such a cell is written as text (OWASP's advice).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value):
    """A value as a CSV cell: None empty, and text that a spreadsheet would run kept inert."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return "'" + value
    return value


def as_csv(report: HealthReport, table: str | None = None) -> str:
    """One table of the report (``TABLES``), or every column, as CSV with a header row."""
    columns = TABLES.get(table or "", ALL_COLUMNS)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\r\n")
    writer.writeheader()
    for values in as_dicts(report, columns):
        writer.writerow({key: csv_cell(value) for key, value in values.items()})
    return buffer.getvalue()
