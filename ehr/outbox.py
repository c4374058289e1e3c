"""The durable write-back outbox: queue FHIR resources for the EHR in the same
transaction as the change they report, and deliver them in the background.

Transactional outbox: ``enqueue_audit_event`` only adds a row to the caller's session,
so the domain change and the promise to report it commit (or roll back) together. All
state is in the database: a restart loses nothing.

Delivery: each server process runs one dispatcher (the ``ehr.outbox`` background loop,
or ``process_due``). It claims due rows with a conditional UPDATE that stamps a lease
(``locked_until``, ``OUTBOX_LEASE_SECONDS`` from when that claim is made, right before
its POST starts), this process's id (``claimed_by``) and the attempt, so two processes
never send the same row at once. While a POST is in flight the dispatcher renews its
lease every third of it, so a slow EHR never lets the lease of a live process run out,
and a result is recorded only under the claim that made the attempt. A process that
dies stops renewing: its rows are due again within one lease, for any process or the
restarted one. Claimed rows are POSTed by workers (greenlets when served, threads in
tests), at most ``OUTBOX_CONCURRENCY_PER_ENDPOINT`` per EHR in this process, over
kept-alive connections; a 429 (or a 503 with Retry-After) pauses that EHR until
Retry-After has passed while the others go on. Every POST carries ``If-None-Exist`` on the business
identifier, so a retry after a lost reply finds the resource instead of duplicating it.
When idle, a process asks one indexed question every ``OUTBOX_POLL_SECONDS``; a commit
that adds outbox rows in this process calls ``wake()`` so they go out at once.

Outcomes: 2xx → sent. 5xx, 408, 429, timeouts, connection errors, token trouble →
retried with exponential backoff and jitter. 401 → the cached token is dropped and the
POST retried once at once. Any other 4xx → failed (dead letter) at once: the EHR will
never accept that payload. After ``OUTBOX_MAX_ATTEMPTS`` tries → failed. Dead letters are
listed and requeued with ``flask outbox list|retry``.
"""
from __future__ import annotations

import json
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import requests
import sqlalchemy as sa
import urllib3
from flask import Flask, current_app
from sqlalchemy.orm import Session

from ehr import auditevents, backend_auth
from ehr.errors import EhrError
from ehr.models import (
    EhrEndpoint,
    LaunchSession,
    WritebackOutbox,
    WritebackResource,
    WritebackStatus,
)
from extensions import db, socketio
from ops.background import periodic
from visits import presence
from visits.models import Appointment, Participant, ParticipantRole, utcnow

log = logging.getLogger(__name__)

FHIR_JSON = "application/fhir+json"

# Worker settings, declared once here (not environment settings: operators rarely need
# them, tests shorten them). ``init_app`` puts them into app.config. Those operators
# tune, OUTBOX_CONCURRENCY_PER_ENDPOINT and OUTBOX_LEASE_SECONDS, are in settings.py.
DEFAULTS: dict[str, Any] = {
    # An idle process looks for due write-backs this often (rows queued by other
    # processes, retries coming due); rows committed in this process go out at once.
    "OUTBOX_POLL_SECONDS": 1.0,
    "OUTBOX_MAX_ATTEMPTS": 12,  # then the row is failed (a dead letter); ~50 min of retries
    "OUTBOX_BACKOFF_BASE_SECONDS": 2.0,  # first retry after ~2 s, doubling each time
    "OUTBOX_BACKOFF_MAX_SECONDS": 600.0,  # never wait more than 10 minutes between tries
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

_rows = WritebackOutbox.__table__  # delivery works on the table: no identity map to feed


@dataclass(frozen=True)
class Outcome:
    """What one delivery attempt came to; ``error`` is short and free of bodies."""

    sent: bool
    retry: bool
    error: str | None = None
    status: int | None = None  # the HTTP status, when there was a reply
    remote_id: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class _Claim:
    """A row leased to this process, with what its POST needs (read by the claim itself)."""

    id: int
    endpoint_id: int
    resource_type: str
    business_identifier: str
    body: bytes  # the payload as stored: sent as is, never parsed here
    attempts: int  # counting this one; with ``claimed_by``, names this claim


def claim_due(now: datetime | None = None, limit: int = 1) -> list[int]:
    """Lease up to ``limit`` due rows to this process; returns their ids. Commits.

    The UPDATE repeats the "due and unclaimed" test, so of two workers racing for a row
    only one gets it (PostgreSQL re-checks the WHERE after the row lock and skips rows
    another claimer has locked; SQLite has one writer at a time). Each claim counts as
    an attempt, so a row that crashes its worker every time still ends up failed.
    """
    now = now or utcnow()
    due = db.session.execute(_DUE, {"now": now, "window": limit}).scalars().all()
    claims = _claim(list(due), now, float(current_app.config["OUTBOX_LEASE_SECONDS"]))
    db.session.commit()
    return [claim.id for claim in claims]


def _due_at(now: Any) -> sa.ColumnElement[bool]:
    """Pending, due and not leased. A claim also moves ``next_attempt_at`` to the lease's
    end, so the (status, next_attempt_at) index leaves rows in flight out by itself."""
    return sa.and_(_rows.c.status == WritebackStatus.PENDING, _rows.c.next_attempt_at <= now,
                   sa.or_(_rows.c.locked_until.is_(None), _rows.c.locked_until <= now))


# Built once: a delivery runs these for every few rows, and building them cost as much
# CPU as running them.
_ANY_DUE = sa.select(_rows.c.id).where(_due_at(sa.bindparam("now"))).limit(1)
_DUE = (
    sa.select(_rows.c.id).where(_due_at(sa.bindparam("now")))
    .order_by(_rows.c.next_attempt_at, _rows.c.id)
    .limit(sa.bindparam("window", type_=sa.Integer))
    # PostgreSQL: concurrent claimers pass each other's rows by instead of waiting.
    .with_for_update(skip_locked=True))
_CANDIDATES = _DUE.where(_rows.c.endpoint_id == sa.bindparam("endpoint"))
_CLAIM = (
    sa.update(_rows)
    .where(_rows.c.id.in_(sa.bindparam("ids", expanding=True)), _due_at(sa.bindparam("now")))
    .values(locked_until=sa.bindparam("lease"), next_attempt_at=sa.bindparam("lease"),
            claimed_by=sa.bindparam("claimer"), attempts=_rows.c.attempts + 1)
    .returning(_rows.c.id, _rows.c.endpoint_id, _rows.c.resource_type,
               _rows.c.business_identifier, sa.cast(_rows.c.payload, sa.Text),
               _rows.c.attempts))
# Only under the claim that made this attempt: a process that took the row over after our
# lease ran out (or the CLI's retry) owns it now.
_OURS = sa.and_(_rows.c.id == sa.bindparam("row_id"),
                _rows.c.claimed_by == sa.bindparam("claimer"),
                _rows.c.attempts == sa.bindparam("attempt"),
                _rows.c.status == WritebackStatus.PENDING)
_RENEW = _rows.update().where(_OURS).values(locked_until=sa.bindparam("lease"),
                                            next_attempt_at=sa.bindparam("lease"))
_RECORD = (
    sa.update(_rows)
    .where(_OURS)
    .values(status=sa.bindparam("new_status"), sent_at=sa.bindparam("new_sent_at"),
            remote_id=sa.bindparam("new_remote_id"), last_error=sa.bindparam("new_error"),
            next_attempt_at=sa.bindparam("new_next"), locked_until=None, claimed_by=None))


def _claim(ids: list[int], now: datetime, lease_seconds: float) -> list[_Claim]:
    """Lease ``ids`` (those still due) to this process, in the caller's transaction."""
    if not ids:
        return []
    lease = now + timedelta(seconds=lease_seconds)
    result = db.session.execute(_CLAIM, {"ids": ids, "now": now, "lease": lease,
                                         "claimer": presence.process_id()})
    return [_Claim(row_id, endpoint_id, resource_type, identifier, payload.encode(), attempts)
            for row_id, endpoint_id, resource_type, identifier, payload, attempts in result]


def process_due(now: datetime | None = None, limit: int | None = None) -> int:
    """Deliver what is due, concurrently, until nothing due is left and nothing is in
    flight; returns how many rows were attempted (at most ``limit``). ``now`` fixes the
    pass's time (tests); otherwise each claim's lease starts when that claim is made.
    Safe to run in every process at once."""
    with _Delivery(current_app._get_current_object(), now, limit) as delivery:
        return delivery.run()


@periodic(0.0, name="ehr.outbox")
def deliver_due_writebacks() -> None:
    """Background loop body: deliver what is due, then wait for ``wake()`` or the next
    poll (the wait is here rather than in the loop's interval so a wake can cut it short)."""
    with _Delivery(current_app._get_current_object(), None, None) as delivery:
        delivery.run()
        delivery.wait()


def wake() -> None:
    """Outbox rows were just committed in this process: deliver them now, not at the next
    poll. Cheap, from any thread or greenlet; commits that add rows call it themselves."""
    with _state_lock:
        inboxes = list(_inboxes)
    for inbox in inboxes:
        inbox.put(_WAKE)


@sa.event.listens_for(Session, "after_flush")
def _note_new_rows(session: Session, _context: Any) -> None:
    if any(isinstance(obj, WritebackOutbox) for obj in session.new):
        session.info["outbox_wake"] = True


@sa.event.listens_for(Session, "after_commit")
def _wake_after_commit(session: Session) -> None:
    if session.info.pop("outbox_wake", False):
        wake()


@sa.event.listens_for(Session, "after_rollback")
def _forget_new_rows(session: Session) -> None:
    session.info.pop("outbox_wake", None)


def finish_in_flight(timeout: float) -> int:
    """The process is stopping: claim no more rows, and wait (at most ``timeout`` seconds)
    until the passes running have had their POSTs answered and the results committed. A
    POST cut off by the exit would be sent again when its lease ran out: the EHR would
    get it twice (a conditional create keeps only one, but not every EHR honours it).
    Returns how many passes were still running."""
    _stopping.set()
    wake()
    deadline = time.monotonic() + timeout
    while True:
        with _state_lock:
            running = len(_running)
        if not running or time.monotonic() >= deadline:
            return running
        socketio.sleep(0.02)


def reset() -> None:
    """Forget this process's delivery state: connections, pauses, timers, a stop (tests)."""
    _stopping.clear()
    with _state_lock:
        endpoints = list(_endpoints.values())
        _endpoints.clear()
    for endpoint in endpoints:
        endpoint.close()


# This process's delivery state, shared by its passes (a test may run two at once).
_state_lock = threading.Lock()
_endpoints: dict[tuple[str, int], _Endpoint] = {}  # by (database URL, endpoint id)
_inboxes: set[Any] = set()  # the queues of running passes, for wake()
_running: set[Any] = set()  # passes inside run(): claiming, or waiting for their POSTs
_stopping = threading.Event()  # set by finish_in_flight(): claim nothing more
_WAKE = object()
# How often a long pass re-reads the endpoints (an admin may add one or edit its URL).
_ENDPOINT_REREAD_S = 60.0


class _Endpoint:
    """This process's line to one EHR: the endpoint's settings, kept-alive connections,
    busy slots and any pause the EHR asked for. Workers use it outside any database
    session; ``backend_auth`` takes it in place of the ``EhrEndpoint`` row."""

    def __init__(self, row: EhrEndpoint, pool_size: int) -> None:
        self.id, self.name = row.id, row.name
        self.fhir_base_url, self.client_id = row.fhir_base_url, row.client_id
        self.http = requests.Session()  # discovery and tokens, and the POSTs' connections
        self._adapter = requests.adapters.HTTPAdapter(pool_maxsize=pool_size)
        self.http.mount("https://", self._adapter)
        self.http.mount("http://", self._adapter)
        self._targets: dict[str, tuple[urllib3.HTTPConnectionPool, str]] = {}
        self.in_flight = 0  # guarded by _state_lock
        self.paused_until: datetime | None = None

    def same_as(self, row: EhrEndpoint) -> bool:
        """Whether ``row`` still has the settings this state was made with."""
        return (self.fhir_base_url, self.client_id, self.name) == (
            row.fhir_base_url, row.client_id, row.name)

    def target(self, resource_type: str) -> tuple[urllib3.HTTPConnectionPool, str]:
        """The connection pool and request target for POSTs of ``resource_type``.

        Set up once as requests would (proxies and CA bundle from the environment, TLS
        checks), then used without requests' per-call work, which cost more CPU than the
        rest of a delivery together.
        """
        found = self._targets.get(resource_type)
        if found is None:
            url = f"{self.fhir_base_url.rstrip('/')}/{resource_type}"
            prepared = requests.Request("POST", url).prepare()
            env = self.http.merge_environment_settings(url, {}, None, None, None)
            pool = self._adapter.get_connection_with_tls_context(
                prepared, env["verify"], env["proxies"], env["cert"])
            self._adapter.cert_verify(pool, url, env["verify"], env["cert"])
            found = self._targets[resource_type] = (
                pool, self._adapter.request_url(prepared, env["proxies"]))
        return found

    def release(self, slots: int = 1) -> None:
        with _state_lock:
            self.in_flight -= slots

    def close(self) -> None:
        self.http.close()


class _Delivery:
    """One dispatcher pass: claims due rows as slots free up, hands each to a worker, and
    records what the workers report, until nothing due is left and nothing is in flight.

    Work follows what changed, not the table's size: each claim asks one endpoint for as
    many due rows as it has free slots (an index on endpoint, status, due time answers
    it), and an endpoint that had fewer is not asked again until a wake, a poll interval
    or the end of the pass. Outcomes and new claims share one transaction, and a busy
    pass waits for a quarter of an endpoint's slots worth of outcomes before it writes,
    so it commits once per handful of rows rather than several times per row.
    """

    def __init__(self, app: Flask, now: datetime | None, limit: int | None) -> None:
        config = app.config
        self.app = app
        self.database = str(config["SQLALCHEMY_DATABASE_URI"])
        self.concurrency = max(1, int(config["OUTBOX_CONCURRENCY_PER_ENDPOINT"]))
        self.lease_seconds = float(config["OUTBOX_LEASE_SECONDS"])
        self.timeout = float(config["OUTBOX_HTTP_TIMEOUT_SECONDS"])
        self.poll = float(config["OUTBOX_POLL_SECONDS"])
        self.max_attempts = int(config["OUTBOX_MAX_ATTEMPTS"])
        self.pause_default = float(config["OUTBOX_BACKOFF_BASE_SECONDS"])
        self.pause_cap = float(config["OUTBOX_BACKOFF_MAX_SECONDS"])
        self.claimer = presence.process_id()
        # POSTs in flight: row id → its claim. All their leases are renewed every third
        # of a lease, so while this process lives none comes within two thirds of a
        # lease of its end (less the time a round waits for outcomes, under a second).
        self.held: dict[int, _Claim] = {}
        self.renew_every = self.lease_seconds / 3
        self.renewed_at = time.monotonic()
        self.now = now
        self.limit = limit
        self.inbox = socketio.server.eio.create_queue()
        self.empty = socketio.server.eio.get_queue_empty_exception()
        self.in_flight = 0
        self.attempted = 0
        self.endpoints: list[_Endpoint] = []
        self.endpoints_read_at: float | None = None
        self.drained: set[int] = set()  # endpoints that had no more due rows just now
        self.drained_at = time.monotonic()

    def __enter__(self) -> _Delivery:
        with _state_lock:
            _inboxes.add(self.inbox)
        return self

    def __exit__(self, *_exc: object) -> None:
        with _state_lock:
            _inboxes.discard(self.inbox)

    def clock(self) -> datetime:
        """The time now: read afresh for each claim and result, unless the caller fixed
        this pass's time (tests move it forward by passing ``now``)."""
        return self.now or utcnow()

    def run(self) -> int:
        with _state_lock:
            _running.add(self)
        try:
            return self._run()
        finally:
            with _state_lock:
                _running.discard(self)

    def _run(self) -> int:
        if not db.session.execute(_ANY_DUE, {"now": self.clock()}).first():
            db.session.commit()
            return 0  # the idle case: that one indexed question was all
        refill = max(1, self.concurrency // 4)
        finished: list[tuple[_Claim, Outcome]] = []
        while True:
            woken = self._collect(finished) if self.in_flight else False
            if woken or time.monotonic() - self.drained_at >= self.poll:
                self.drained.clear()  # rows may have been queued or come due meanwhile
                self.drained_at = time.monotonic()
            renew = self.held and time.monotonic() - self.renewed_at >= self.renew_every
            if self.in_flight and not woken and len(finished) < refill and not renew:
                continue
            started = self._round(finished)
            finished = []
            for endpoint, claim in started:
                self._start(endpoint, claim)
            if not self.in_flight:
                return self.attempted

    def wait(self) -> None:
        """Until ``wake()`` or the poll interval, whichever comes first."""
        try:
            self.inbox.get(timeout=self.poll)
        except self.empty:
            pass

    def _collect(self, finished: list[tuple[_Claim, Outcome]]) -> bool:
        """Wait for outcomes and take all that are there; True when woken or the poll
        interval passed (time to look for due rows again)."""
        try:
            # No longer than a renewal's interval either: a short lease must not run out.
            item = self.inbox.get(timeout=min(self.poll, self.renew_every))
        except self.empty:
            return True
        woken = False
        while True:
            if item is _WAKE:
                woken = True
            else:
                finished.append(item)
                self.in_flight -= 1
            try:
                item = self.inbox.get(block=False)
            except self.empty:
                return woken

    def _round(self, finished: list[tuple[_Claim, Outcome]]) -> list[tuple[_Endpoint, _Claim]]:
        """Record outcomes, then claim rows for free slots; one transaction."""
        now = self.clock()
        if finished:
            self._record(finished, now)
        if self.held and time.monotonic() - self.renewed_at >= self.renew_every:
            self._renew(now)
        room = self.limit - self.attempted if self.limit is not None else None
        claim = (room is None or room > 0) and not _stopping.is_set()
        started = self._claim(now, room) if claim else []
        db.session.commit()
        return started

    def _claim(self, now: datetime, room: int | None) -> list[tuple[_Endpoint, _Claim]]:
        """Ask each endpoint with free slots (and not drained) for that many due rows,
        then lease them all with one UPDATE."""
        picked: dict[int, _Endpoint] = {}
        for endpoint in self._current_endpoints():
            if endpoint.id in self.drained:
                continue
            with _state_lock:  # take the slots now, so a concurrent pass cannot take them
                wanted = self._free_slots(endpoint, now)
                if room is not None:
                    wanted = min(wanted, room - len(picked))
                endpoint.in_flight += wanted
            if wanted <= 0:
                continue
            try:
                ids = db.session.execute(_CANDIDATES, {
                    "endpoint": endpoint.id, "now": now, "window": wanted}).scalars().all()
            except BaseException:
                endpoint.release(wanted)
                raise
            endpoint.release(wanted - len(ids))
            if len(ids) < wanted:
                self.drained.add(endpoint.id)
            picked.update((row_id, endpoint) for row_id in ids)
        try:
            claims = _claim(list(picked), now, self.lease_seconds)
        except BaseException:
            for endpoint in picked.values():
                endpoint.release(1)
            raise
        for row_id in picked.keys() - {claim.id for claim in claims}:
            picked[row_id].release(1)  # another process was faster
        return [(picked[claim.id], claim) for claim in claims]

    def _free_slots(self, endpoint: _Endpoint, now: datetime) -> int:
        if endpoint.paused_until is not None and endpoint.paused_until > now:
            return 0
        return max(0, self.concurrency - endpoint.in_flight)

    def _current_endpoints(self) -> list[_Endpoint]:
        """Every endpoint, as this process's state for it; read from the database once per
        pass and every minute, so an added endpoint or an edited URL takes effect."""
        if self.endpoints_read_at is not None and \
                time.monotonic() - self.endpoints_read_at < _ENDPOINT_REREAD_S:
            return self.endpoints
        rows = db.session.execute(sa.select(EhrEndpoint).order_by(EhrEndpoint.id)).scalars().all()
        endpoints = []
        with _state_lock:  # no database work under the lock: wake() takes it too
            for row in rows:
                key = (self.database, row.id)
                current = _endpoints.get(key)
                if current is None or not current.same_as(row):
                    current = _endpoints[key] = _Endpoint(row, self.concurrency)
                endpoints.append(current)
        self.endpoints, self.endpoints_read_at = endpoints, time.monotonic()
        return endpoints

    def _renew(self, now: datetime) -> None:
        """Extend the lease of every POST in flight (one batch, in the round's
        transaction): the process is alive and still waiting for the EHR."""
        lease = now + timedelta(seconds=self.lease_seconds)
        db.session.execute(_RENEW, [{"row_id": claim.id, "claimer": self.claimer,
                                     "attempt": claim.attempts, "lease": lease}
                                    for claim in self.held.values()])
        self.renewed_at = time.monotonic()

    def _start(self, endpoint: _Endpoint, claim: _Claim) -> None:
        if not self.held:  # the first in flight: its first renewal is a third of a lease on
            self.renewed_at = time.monotonic()
        self.held[claim.id] = claim
        self.in_flight += 1
        self.attempted += 1
        socketio.start_background_task(_work, self, endpoint, claim)

    def _record(self, finished: list[tuple[_Claim, Outcome]], now: datetime) -> None:
        """One UPDATE per row, sent as one batch; each only under the claim that made the
        attempt (a process that took the row over after our lease ran out owns it now)."""
        params = []
        for claim, outcome in finished:
            self.held.pop(claim.id, None)
            values = {"row_id": claim.id, "claimer": self.claimer, "attempt": claim.attempts,
                      "new_status": None,
                      "new_sent_at": None, "new_remote_id": None, "new_error": outcome.error,
                      "new_next": None}
            if outcome.sent:
                values.update(new_status=WritebackStatus.SENT, new_sent_at=now,
                              new_remote_id=outcome.remote_id, new_error=None)
            elif outcome.retry and claim.attempts < self.max_attempts:
                values.update(new_status=WritebackStatus.PENDING, new_next=now + timedelta(
                    seconds=backoff_seconds(claim.attempts, outcome.retry_after)))
            else:
                values.update(new_status=WritebackStatus.FAILED)
            params.append(values)
            extra = {"outbox_id": claim.id, "resource_type": claim.resource_type,
                     "endpoint_id": claim.endpoint_id, "attempts": claim.attempts,
                     "status": str(values["new_status"]), "error": outcome.error}
            if outcome.sent:
                log.debug("write-back sent", extra=extra)
            else:
                log.warning("write-back not delivered", extra=extra)
        recorded = db.session.execute(_RECORD, params).rowcount
        if recorded != len(params):
            log.warning("write-back results not recorded: claim taken over",
                        extra={"count": len(params) - recorded})

    def pause(self, endpoint: _Endpoint, retry_after: float | None) -> None:
        """The EHR asked us to slow down: no new POSTs to it until Retry-After passed."""
        seconds = min(self.pause_cap, retry_after if retry_after is not None
                      else self.pause_default)
        until = self.clock() + timedelta(seconds=seconds)
        with _state_lock:
            if endpoint.paused_until is None or endpoint.paused_until < until:
                endpoint.paused_until = until
        log.warning("write-backs to an endpoint paused",
                    extra={"endpoint_id": endpoint.id, "seconds": seconds})


def _work(delivery: _Delivery, endpoint: _Endpoint, claim: _Claim) -> None:
    """A worker: one write-back's POST (two after a 401). It always frees its slot and
    reports back, or the row would wait for its lease to run out."""
    outcome = Outcome(sent=False, retry=True, error="internal error")
    try:
        outcome = _attempt(delivery.app, endpoint, claim, delivery.timeout)
        if outcome.status == 429 or (outcome.status == 503 and outcome.retry_after is not None):
            delivery.pause(endpoint, outcome.retry_after)
    except Exception:  # the worker's edge: log it, the row is retried like any failure
        log.exception("write-back worker failed", extra={"outbox_id": claim.id})
    finally:
        endpoint.release()
        delivery.inbox.put((claim, outcome))


def backoff_seconds(attempts: int, retry_after: float | None = None) -> float:
    """Delay before the next try: base × 2^(attempts-1), capped, ±20 % jitter so many
    rows failing together do not retry in lockstep; at least the server's Retry-After."""
    config = current_app.config
    base, cap = float(config["OUTBOX_BACKOFF_BASE_SECONDS"]), float(
        config["OUTBOX_BACKOFF_MAX_SECONDS"])
    delay = min(cap, base * 2 ** max(attempts - 1, 0)) * random.uniform(0.8, 1.2)
    return min(cap, max(delay, retry_after or 0.0))


def _attempt(app: Flask, endpoint: _Endpoint, claim: _Claim, timeout: float) -> Outcome:
    try:
        token = _token(app, endpoint)
        outcome = _post(endpoint, claim, token, timeout)
        if outcome.status == 401:
            # Expired or revoked (the EHR restarted, say): a fresh token, one more try now.
            backend_auth.forget(endpoint, token=token)
            outcome = _post(endpoint, claim, _token(app, endpoint), timeout)
        return outcome
    except EhrError as exc:  # discovery or token trouble: fixable on the EHR side, retry
        with app.app_context():  # counted for the integration health report
            backend_auth.record_failure(endpoint.id, exc)
        return Outcome(sent=False, retry=True, error=f"token: {exc}"[:200])


def _token(app: Flask, endpoint: _Endpoint) -> str:
    token = backend_auth.cached_token(endpoint)
    if token is not None:
        return token
    with app.app_context():  # the client assertion is signed with our key, in the database
        try:
            return backend_auth.access_token(endpoint, session=endpoint.http)
        finally:
            db.session.remove()


def _post(endpoint: _Endpoint, claim: _Claim, token: str, timeout: float) -> Outcome:
    pool, target = endpoint.target(claim.resource_type)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON,
               "Accept": FHIR_JSON,
               "If-None-Exist": auditevents.if_none_exist(claim.business_identifier)}
    try:
        response = pool.urlopen("POST", target, body=claim.body, headers=headers,
                                retries=False, redirect=False, assert_same_host=False,
                                timeout=timeout, preload_content=True)
    except urllib3.exceptions.NewConnectionError:  # a subclass of the timeout, oddly
        return Outcome(sent=False, retry=True, error="ConnectionError")
    except urllib3.exceptions.TimeoutError:
        return Outcome(sent=False, retry=True, error="timeout")
    except (urllib3.exceptions.HTTPError, OSError):
        return Outcome(sent=False, retry=True, error="ConnectionError")
    status = response.status
    if 200 <= status < 300:
        return Outcome(sent=True, retry=False, status=status,
                       remote_id=_remote_id(response.headers, response.data,
                                            claim.resource_type))
    error = f"HTTP {status}"
    code = _outcome_code(response.data)
    if code:
        error += f" {code}"
    retry = status >= 500 or status in _RETRYABLE_4XX
    return Outcome(sent=False, retry=retry, error=error, status=status,
                   retry_after=_retry_after(response.headers.get("Retry-After")))


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:  # UnicodeDecodeError included
        return None


def _remote_id(headers: Any, body: bytes, resource_type: str) -> str | None:
    """The new resource's id from Location (``…/Type/id/_history/n``) or else the body."""
    location = headers.get("Location") or headers.get("Content-Location")
    if location:
        parts = urlsplit(location).path.rstrip("/").split("/")
        if "_history" in parts:
            parts = parts[:parts.index("_history")]
        if len(parts) >= 2 and parts[-2] == resource_type:
            return parts[-1][:200]
    document = _json(body)
    resource_id = document.get("id") if isinstance(document, dict) else None
    return str(resource_id)[:200] if resource_id else None


def _outcome_code(body: bytes) -> str | None:
    """The first OperationOutcome issue code, and nothing else: bodies may echo PHI."""
    document = _json(body)
    if not isinstance(document, dict) or document.get("resourceType") != "OperationOutcome":
        return None
    issues = document.get("issue")
    code = issues[0].get("code") if isinstance(issues, list) and issues and \
        isinstance(issues[0], dict) else None
    return str(code)[:40] if isinstance(code, str) and code.isascii() else None


def _retry_after(value: str | None) -> float | None:
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
                     claimed_by=None, next_attempt_at=now or utcnow())
        .execution_options(synchronize_session=False))
    db.session.commit()
    if result.rowcount:
        wake()
    return result.rowcount


def as_dict(row: WritebackOutbox) -> dict[str, Any]:
    """A row for listings: ids, state and the short error, never the payload."""
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": row.id, "endpoint_id": row.endpoint_id, "appointment_id": row.appointment_id,
            "resource_type": row.resource_type, "business_identifier": row.business_identifier,
            "status": row.status, "attempts": row.attempts, "last_error": row.last_error,
            "next_attempt_at": iso(row.next_attempt_at), "remote_id": row.remote_id,
            "created_at": iso(row.created_at), "sent_at": iso(row.sent_at),
            "locked_until": iso(row.locked_until), "claimed_by": row.claimed_by}
