"""The durable write-back outbox: queue FHIR resources for the EHR in the same
transaction as the change they report, and deliver them in the background.

Transactional outbox: ``enqueue_audit_event`` only adds a row to the caller's session,
so the domain change and the promise to report it commit (or roll back) together. The
worker claims due rows with a conditional UPDATE (a lease in ``locked_until``), so two
processes never send the same row at once, and a process that dies mid-send leaves a
lease that simply runs out. Every POST carries ``If-None-Exist`` on the business
identifier, so a retry after a lost reply finds the resource instead of duplicating it.
All state is in the database: a restart loses nothing.

Outcomes: 2xx → sent. 5xx, 408, 429, timeouts, connection errors, token trouble →
retried with exponential backoff and jitter. 401 → the cached token is dropped and the
POST retried once at once. Any other 4xx → failed (dead letter) at once: the EHR will
never accept that payload. After ``OUTBOX_MAX_ATTEMPTS`` tries → failed. Dead letters are
listed and requeued with ``flask outbox list|retry``.
"""
from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
from flask import Flask, current_app

from ehr import auditevents, backend_auth
from ehr.errors import EhrError
from ehr.models import LaunchSession, WritebackOutbox, WritebackResource, WritebackStatus
from extensions import db
from ops.background import periodic
from visits.models import Appointment, Participant, ParticipantRole, utcnow

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"

# Worker settings, declared once here (not environment settings: operators rarely need
# them, tests shorten them). ``init_app`` puts them into app.config.
DEFAULTS: dict[str, Any] = {
    "OUTBOX_POLL_SECONDS": 1.0,  # how often each process looks for due write-backs
    "OUTBOX_BATCH_SIZE": 20,  # rows one poll handles at most, so a backlog cannot starve others
    "OUTBOX_MAX_ATTEMPTS": 12,  # then the row is failed (a dead letter); ~50 min of retries
    "OUTBOX_BACKOFF_BASE_SECONDS": 2.0,  # first retry after ~2 s, doubling each time
    "OUTBOX_BACKOFF_MAX_SECONDS": 600.0,  # never wait more than 10 minutes between tries
    # A claim lasts this long; must exceed one send (token + POST, 10 s timeouts each).
    "OUTBOX_LEASE_SECONDS": 60.0,
    "OUTBOX_HTTP_TIMEOUT_SECONDS": 10.0,
}
# 4xx that say "later", not "never".
_RETRYABLE_4XX = frozenset({401, 408, 429})


def init_app(app: Flask) -> None:
    """Declare the outbox settings' defaults (the test mapping may already set them)."""
    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)


# --- enqueue ----------------------------------------------------------------------------

def enqueue_audit_event(appointment: Appointment, action: str, *, at: datetime,
                        event_key: str, participant: Participant | None = None,
                        actor: Participant | None = None) -> WritebackOutbox:
    """Queue an AuditEvent for ``action`` in the caller's transaction (no commit here).

    ``event_key`` names the fact within the appointment's endpoint (e.g. ``presence-42``);
    the same action and key again returns the row already queued instead of a second one.
    ``participant`` is whom the event is about, ``actor`` who caused it (admit, end).
    """
    identifier = auditevents.business_identifier(action, event_key)
    existing = db.session.execute(
        db.select(WritebackOutbox).filter_by(endpoint_id=appointment.endpoint_id,
                                             business_identifier=identifier)
    ).scalar_one_or_none()  # autoflush here also gives the caller's new rows their ids
    if existing is not None:
        return existing
    public = current_app.config["PUBLIC_BASE_URL"]
    payload = auditevents.build(
        action, identifier=identifier, at=at, recorded=utcnow(),
        appointment_reference=(f"Appointment/{appointment.ehr_appointment_id}"
                               if appointment.ehr_appointment_id else None),
        appointment_local_id=appointment.id,
        encounter_reference=_encounter_of(appointment),
        patient_reference=_patient_of(appointment),
        subject=_agent(participant) if participant else None,
        requestor=_agent(actor) if actor else None,
        source_url=public, source_site=urlsplit(public).hostname or public)
    return enqueue_resource(appointment, WritebackResource.AUDIT_EVENT, identifier, payload)


def enqueue_resource(appointment: Appointment, resource_type: WritebackResource,
                     business_identifier: str, payload: dict[str, Any]) -> WritebackOutbox:
    """Queue any write-back resource in the caller's transaction (no commit here).

    The payload must carry ``business_identifier`` under ``auditevents.EVENT_SYSTEM``
    where the EHR's ``identifier`` search finds it (``Observation.identifier``; for an
    AuditEvent, ``entity.what.identifier``): delivery sends ``If-None-Exist`` on it.
    Returns the row already queued when this identifier was queued before.
    """
    existing = db.session.execute(
        db.select(WritebackOutbox).filter_by(endpoint_id=appointment.endpoint_id,
                                             business_identifier=business_identifier)
    ).scalar_one_or_none()
    if existing is not None:
        return existing
    row = WritebackOutbox(endpoint_id=appointment.endpoint_id, appointment=appointment,
                          resource_type=resource_type, business_identifier=business_identifier,
                          payload=payload, status=WritebackStatus.PENDING, attempts=0,
                          next_attempt_at=utcnow())
    db.session.add(row)
    return row


def _agent(participant: Participant) -> auditevents.Agent:
    reference = participant.ehr_user_id
    if reference and not reference.startswith(("Practitioner/", "Patient/", "RelatedPerson/",
                                               "PractitionerRole/")):
        reference = None  # not a FHIR reference we can vouch for; the participant id remains
    return auditevents.Agent(role=participant.role, reference=reference,
                             participant_id=participant.id)


def _patient_of(appointment: Appointment) -> str | None:
    for participant in appointment.participants:
        if participant.role == ParticipantRole.PATIENT and \
                (participant.ehr_user_id or "").startswith("Patient/"):
            return participant.ehr_user_id
    return None


def _encounter_of(appointment: Appointment) -> str | None:
    """The Encounter a SMART launch told us about for this visit, if any did."""
    return db.session.execute(
        db.select(LaunchSession.encounter_ref)
        .where(LaunchSession.appointment_id == appointment.id,
               LaunchSession.encounter_ref.is_not(None))
        .order_by(LaunchSession.created_at.desc()).limit(1)
    ).scalar_one_or_none()


# --- deliver ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to; ``error`` is short and free of bodies."""

    sent: bool
    retry: bool
    error: str | None = None
    status: int | None = None  # the HTTP status, when there was a reply
    remote_id: str | None = None
    retry_after: float | None = None


def claim_due(now: datetime | None = None, limit: int = 1) -> list[int]:
    """Lease up to ``limit`` due rows to this worker; returns their ids. Commits.

    The UPDATE repeats the "due and unclaimed" test, so of two workers racing for a row
    only one sees rowcount 1 (PostgreSQL re-checks the WHERE after the row lock; SQLite
    has one writer at a time). Each claim counts as an attempt, so a row that crashes
    its worker every time still ends up failed.
    """
    now = now or utcnow()
    lease = now + timedelta(seconds=float(current_app.config["OUTBOX_LEASE_SECONDS"]))
    due = _due_condition(now)
    candidates = db.session.execute(
        db.select(WritebackOutbox.id).where(due)
        .order_by(WritebackOutbox.next_attempt_at, WritebackOutbox.id).limit(limit)
    ).scalars().all()
    claimed = []
    for row_id in candidates:
        result = db.session.execute(
            sa.update(WritebackOutbox)
            .where(WritebackOutbox.id == row_id, due)
            .values(locked_until=lease, attempts=WritebackOutbox.attempts + 1)
            .execution_options(synchronize_session=False))
        if result.rowcount == 1:
            claimed.append(row_id)
    db.session.commit()
    return claimed


def _due_condition(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        WritebackOutbox.status == WritebackStatus.PENDING,
        WritebackOutbox.next_attempt_at <= now,
        sa.or_(WritebackOutbox.locked_until.is_(None), WritebackOutbox.locked_until <= now))


def process_due(now: datetime | None = None, limit: int | None = None) -> int:
    """Deliver up to ``limit`` due write-backs, one claim at a time; returns how many were
    attempted. Safe to run in every process at once."""
    now = now or utcnow()
    limit = limit if limit is not None else int(current_app.config["OUTBOX_BATCH_SIZE"])
    handled = 0
    with requests.Session() as http:
        while handled < limit:
            claimed = claim_due(now, limit=1)
            if not claimed:
                break
            _deliver(claimed[0], now, http)
            handled += 1
    return handled


@periodic("OUTBOX_POLL_SECONDS", name="ehr.outbox")
def deliver_due_writebacks() -> None:
    """Background loop body: send whatever is due."""
    process_due()


def _deliver(row_id: int, now: datetime, http: requests.Session) -> None:
    row = db.session.get(WritebackOutbox, row_id, populate_existing=True)
    if row is None:
        return
    lease = row.locked_until
    extra: dict[str, Any] = {"outbox_id": row_id, "resource_type": row.resource_type,
                             "endpoint_id": row.endpoint_id, "attempts": row.attempts}
    outcome = _attempt(row, http)
    values: dict[str, Any] = {"locked_until": None, "last_error": outcome.error}
    if outcome.sent:
        values.update(status=WritebackStatus.SENT, sent_at=now, remote_id=outcome.remote_id,
                      last_error=None, next_attempt_at=None)
    elif outcome.retry and row.attempts < int(current_app.config["OUTBOX_MAX_ATTEMPTS"]):
        values.update(next_attempt_at=now + timedelta(
            seconds=backoff_seconds(row.attempts, outcome.retry_after)))
    else:
        values.update(status=WritebackStatus.FAILED, next_attempt_at=None)
    # Only if our lease still holds: a worker that took over after it ran out owns the row.
    db.session.rollback()  # end the read transaction; nothing of ours is pending
    result = db.session.execute(
        sa.update(WritebackOutbox)
        .where(WritebackOutbox.id == row_id, WritebackOutbox.locked_until == lease)
        .values(**values).execution_options(synchronize_session=False))
    db.session.commit()
    extra.update(status=str(values.get("status", WritebackStatus.PENDING)),
                 error=outcome.error)
    if result.rowcount != 1:
        log.warning("write-back lease lost before the result was recorded", extra=extra)
    elif outcome.sent:
        log.info("write-back sent", extra=extra)
    else:
        log.warning("write-back not delivered", extra=extra)


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Delay before the next try: base × 2^(attempts-1), capped, ±20 % jitter so many
    rows failing together do not retry in lockstep; at least the server's Retry-After."""
    config = current_app.config
    base, cap = float(config["OUTBOX_BACKOFF_BASE_SECONDS"]), float(
        config["OUTBOX_BACKOFF_MAX_SECONDS"])
    delay = min(cap, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.8, 1.2)
    return min(cap, max(delay, retry_after or 0.0))


def _attempt(row: WritebackOutbox, http: requests.Session) -> Outcome:
    endpoint = row.endpoint
    try:
        outcome = _post(row, backend_auth.access_token(endpoint, session=http), http)
        if outcome.status == 401:
            # Expired or revoked (the EHR restarted, say): a fresh token, one more try now.
            backend_auth.forget(endpoint)
            outcome = _post(row, backend_auth.access_token(endpoint, session=http), http)
        return outcome
    except EhrError as exc:  # discovery or token trouble: fixable on the EHR side, retry
        return Outcome(sent=False, retry=True, error=f"token: {exc}"[:200])


def _post(row: WritebackOutbox, token: str, http: requests.Session) -> Outcome:
    url = f"{row.endpoint.fhir_base_url.rstrip('/')}/{row.resource_type}"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON,
               "Accept": FHIR_JSON,
               "If-None-Exist": auditevents.if_none_exist(row.business_identifier)}
    try:
        response = http.post(url, json=row.payload, headers=headers,
                             timeout=float(current_app.config["OUTBOX_HTTP_TIMEOUT_SECONDS"]))
    except requests.Timeout:
        return Outcome(sent=False, retry=True, error="timeout")
    except requests.RequestException as exc:
        return Outcome(sent=False, retry=True, error=type(exc).__name__)
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(sent=True, retry=False, status=status,
                       remote_id=_remote_id(response, row.resource_type))
    error = f"HTTP {status}"
    code = _outcome_code(response)
    if code:
        error += f" {code}"
    retry = status >= 500 or status in _RETRYABLE_4XX
    return Outcome(sent=False, retry=retry, error=error, status=status,
                   retry_after=_retry_after(response))


def _remote_id(response: requests.Response, resource_type: str) -> str | None:
    """The new resource's id from Location (``…/Type/id/_history/n``) or else the body."""
    location = response.headers.get("Location") or response.headers.get("Content-Location")
    if location:
        parts = urlsplit(location).path.rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[:parts.index("_history")]
        if len(parts) >= 2 and parts[-2] == resource_type:
            return parts[-1][:200]
    try:
        body = response.json()
    except ValueError:
        return None
    resource_id = body.get("id") if isinstance(body, dict) else None
    return str(resource_id)[:200] if resource_id else None


def _outcome_code(response: requests.Response) -> str | None:
    """The first OperationOutcome issue code, and nothing else: bodies may echo PHI."""
    try:
        body = response.json()
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("resourceType") != "OperationOutcome":
        return None
    issues = body.get("issue")
    code = issues[0].get("code") if isinstance(issues, list) and issues and \
        isinstance(issues[0], dict) else None
    return str(code)[:40] if isinstance(code, str) and code.isascii() else None


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


# --- dead letters -----------------------------------------------------------------------

def list_rows(status: str | None = None, limit: int = 200) -> list[WritebackOutbox]:
    """Outbox rows, newest first, optionally of one status."""
    query = db.select(WritebackOutbox).order_by(WritebackOutbox.created_at.desc(),
                                                 WritebackOutbox.id.desc()).limit(limit)
    if status:
        query = query.where(WritebackOutbox.status == status)
    return list(db.session.execute(query).scalars())


def requeue(ids: list[int] | None = None, *, all_failed: bool = False,
            now: datetime | None = None) -> int:
    """Give failed rows a fresh set of attempts, due now; returns how many. Commits."""
    if not ids and not all_failed:
        return 0
    query = sa.update(WritebackOutbox).where(WritebackOutbox.status == WritebackStatus.FAILED)
    if not all_failed:
        query = query.where(WritebackOutbox.id.in_(ids or []))
    result = db.session.execute(
        query.values(status=WritebackStatus.PENDING, attempts=0, locked_until=None,
                     next_attempt_at=now or utcnow())
        .execution_options(synchronize_session=False))
    db.session.commit()
    return result.rowcount


def as_dict(row: WritebackOutbox) -> dict[str, Any]:
    """A row for listings: ids, state and the short error, never the payload."""
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": row.id, "endpoint_id": row.endpoint_id, "appointment_id": row.appointment_id,
            "resource_type": row.resource_type, "business_identifier": row.business_identifier,
            "status": row.status, "attempts": row.attempts, "last_error": row.last_error,
            "next_attempt_at": iso(row.next_attempt_at), "remote_id": row.remote_id,
            "created_at": iso(row.created_at), "sent_at": iso(row.sent_at)}
