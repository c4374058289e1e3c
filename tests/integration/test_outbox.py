"""The write-back outbox against the sandbox EHR over real HTTP, on SQLite and PostgreSQL.

Failures are staged with a small forwarding proxy in front of the sandbox: it passes
everything through (discovery, searches) and, when told to, answers POSTs to
/AuditEvent with a 500 or a 400, or forwards them and then "loses" the reply. Time is
advanced by passing ``now`` to ``process_due``, never by sleeping. Concurrency, pauses
and leases are watched from a FHIR stand-in that counts what is in flight and can hold
POSTs back or answer 429.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import sqlalchemy as sa
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import create_engine, text

from ehr import backend_auth, outbox
from ehr.models import BackendTokenFailure, EhrEndpoint, WritebackOutbox
from ehr.services import ensure_endpoint
from extensions import db
from sandbox_ehr.models import SandboxAccessToken
from settings import sqlalchemy_url
from tests import factories
from tests.local_http import JsonHandler, serving
from visits.models import utcnow

EVENT_SYSTEM = "urn:virtual-visits:event"
POSTGRES_URL = os.environ.get("DATABASE_URL")


def _backends() -> list[str]:
    backends = ["sqlite"]
    if POSTGRES_URL and POSTGRES_URL.startswith(("postgres://", "postgresql")):
        backends.append("postgresql")
    return backends


@pytest.fixture(scope="module", params=_backends())
def live_server_config(request, tmp_path_factory) -> Iterator[dict]:
    """The live server's own database: SQLite, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield {"DATABASE_URL": f"sqlite:///{tmp_path_factory.mktemp('outbox') / 'app.db'}"}
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(sqlalchemy_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield {"DATABASE_URL": f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"}
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def ctx(live_server):
    """An app context on the live server's app, with an empty outbox and token cache (the
    server, and so its database, is shared by the module's tests)."""
    backend_auth.clear_cache()
    outbox.reset()
    with live_server.app.app_context():
        db.session.execute(sa.delete(WritebackOutbox))
        db.session.commit()
        yield live_server.app
        db.session.remove()
    outbox.reset()


# --- the forwarding proxy -----------------------------------------------------------------

@dataclass
class Proxy:
    """Forwards to the live server; ``mode`` decides what POST /AuditEvent gets."""

    url: str
    mode: str = "forward"  # forward | fail-500 | fail-400 | lose-reply
    posts: int = 0
    seen: list[str] = field(default_factory=list)

    @property
    def fhir_base(self) -> str:
        return self.url + "/sandbox/fhir"


@pytest.fixture
def proxy(live_server) -> Iterator[Proxy]:
    state = Proxy(url="")
    upstream = requests.Session()
    upstream.trust_env = False

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _relay(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            is_write = self.command == "POST" and self.path.rstrip("/").endswith("/AuditEvent")
            if is_write:
                state.posts += 1
                state.seen.append(state.mode)
                if state.mode == "fail-500":
                    return self._answer(500, {"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "exception",
                         "diagnostics": "Patient Jane Doe 555-0101 broke it"}]})
                if state.mode == "fail-400":
                    return self._answer(400, {"resourceType": "OperationOutcome", "issue": [
                        {"severity": "error", "code": "invalid", "diagnostics": "no"}]})
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("host", "content-length", "connection")}
            reply = upstream.request(self.command, live_server.url + self.path, data=body,
                                     headers=headers, allow_redirects=False)
            if is_write and state.mode == "lose-reply":
                return self._answer(502, None)  # created upstream, but we never hear of it
            self.send_response(reply.status_code)
            for name, value in reply.headers.items():
                if name.lower() not in ("content-length", "transfer-encoding", "connection",
                                        "content-encoding"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.content)))
            self.end_headers()
            self.wfile.write(reply.content)

        def _answer(self, status: int, body: dict | None) -> None:
            raw = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/fhir+json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        do_GET = do_POST = _relay  # noqa: N815

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              daemon=True)
    thread.start()
    yield state
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()


# --- the FHIR stand-in ---------------------------------------------------------------------

@dataclass
class Ehr:
    """A FHIR server of its own: discovery, tokens, and POST /AuditEvent, counted per
    business identifier and by how many are in flight at once."""

    url: str = ""
    delay: float = 0.0  # the EHR's answer time
    retry_after: int | None = None  # set: every POST is answered 429 with this Retry-After
    released: threading.Event = field(default_factory=threading.Event)  # clear: POSTs wait
    on_post: Callable[[str], None] | None = None  # called with each POST's identifier
    arrived: Counter = field(default_factory=Counter)  # created, per business identifier
    throttled: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def fhir_base(self) -> str:
        return self.url + "/fhir"

    def wait_for_posts(self, count: int, seconds: float = 10.0) -> bool:
        """Until ``count`` POSTs were answered (created or throttled), at most ``seconds``."""
        with self.changed:
            return self.changed.wait_for(
                lambda: sum(self.arrived.values()) + self.throttled >= count, seconds)


class _EhrHandler(JsonHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the outbox's connection pools expect
    ehr: Ehr

    def do_GET(self):  # noqa: N802
        if self.path.endswith("/.well-known/smart-configuration"):
            return self.send_json(200, {"token_endpoint": self.ehr.fhir_base + "/token",
                                        "grant_types_supported": ["client_credentials"]})
        return self.send_json(404, {})

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.endswith("/token"):
            return self.send_json(200, {"access_token": "t", "token_type": "Bearer",
                                        "expires_in": 3600})
        ehr, identifier = self.ehr, self.headers["If-None-Exist"].rsplit("|", 1)[-1]
        with ehr.changed:
            ehr.in_flight += 1
            ehr.max_in_flight = max(ehr.max_in_flight, ehr.in_flight)
        try:
            if ehr.on_post:
                ehr.on_post(identifier)
            ehr.released.wait(timeout=30)
            time.sleep(ehr.delay)
        finally:
            with ehr.changed:
                ehr.in_flight -= 1
        with ehr.changed:
            if ehr.retry_after is not None:
                ehr.throttled += 1
            else:
                ehr.arrived[identifier] += 1
            ehr.changed.notify_all()
        if ehr.retry_after is not None:
            body = b"{}"
            self.send_response(429)
            self.send_header("Retry-After", str(ehr.retry_after))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return None
        return self.send_json(201, {"resourceType": "AuditEvent",
                                    "id": str(sum(ehr.arrived.values()))})


@pytest.fixture
def standin() -> Iterator[Callable[..., Ehr]]:
    """Starts FHIR stand-ins (``standin(delay=0.05)``); all stop after the test."""
    started: list[Ehr] = []
    with ExitStack() as stack:
        def start(**options) -> Ehr:
            ehr = Ehr(**options)
            ehr.released.set()
            ehr.url = stack.enter_context(serving(type("Handler", (_EhrHandler,), {"ehr": ehr})))
            started.append(ehr)
            return ehr

        yield start
        for ehr in started:  # let held POSTs finish, so the servers can stop
            ehr.released.set()


# --- helpers ------------------------------------------------------------------------------

def _endpoint(fhir_base: str):
    """The endpoint for ``fhir_base`` (unique per endpoint), made on first use."""
    existing = db.session.execute(
        sa.select(EhrEndpoint).filter_by(fhir_base_url=fhir_base)).scalar_one_or_none()
    if existing is not None:
        return existing
    return ensure_endpoint(f"ep-{uuid.uuid4().hex[:10]}", fhir_base, client_id="virtual-visits",
                           scopes="launch openid", approved_by="test")


def _visit(fhir_base: str):
    return factories.make_visit(_endpoint(fhir_base), ehr_id=f"appt-{uuid.uuid4().hex[:10]}")


def _enqueue_three(visit) -> list[WritebackOutbox]:
    now = utcnow()
    key = uuid.uuid4().hex[:8]
    rows = [
        outbox.enqueue_audit_event(visit.appointment, "participant-connected", at=now,
                                   event_key=f"{key}-c", participant=visit.patient),
        outbox.enqueue_audit_event(visit.appointment, "participant-admitted", at=now,
                                   event_key=f"{key}-a", participant=visit.patient,
                                   actor=visit.provider),
        outbox.enqueue_audit_event(visit.appointment, "visit-ended", at=now,
                                   event_key=f"{key}-e", actor=visit.provider),
    ]
    db.session.commit()
    return rows


def _enqueue(visit, count: int) -> list[int]:
    key, now = uuid.uuid4().hex[:8], utcnow()
    rows = [outbox.enqueue_audit_event(visit.appointment, "participant-connected", at=now,
                                       event_key=f"{key}-{number}", participant=visit.patient)
            for number in range(count)]
    db.session.commit()
    return [row.id for row in rows]


def _in_background(app, work: Callable[[], int]) -> tuple[threading.Thread, list[int]]:
    """Runs ``work`` in its own thread and app context, as another worker would."""
    results: list[int] = []

    def run() -> None:
        with app.app_context():
            results.append(work())
            db.session.remove()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, results


def _sandbox_events(live_server, identifier: str) -> list[dict]:
    from sandbox_ehr import store

    with live_server.app.app_context():
        return store.find("AuditEvent", {"identifier": [f"{EVENT_SYSTEM}|{identifier}"]})


def _rows(ids: list[int]) -> list[WritebackOutbox]:
    db.session.expire_all()
    return [db.session.get(WritebackOutbox, row_id) for row_id in ids]


# --- tests --------------------------------------------------------------------------------

def test_three_events_arrive_in_the_sandbox_as_valid_audit_events(ctx, live_server):
    visit = _visit(live_server.url + "/sandbox/fhir")
    ids = [row.id for row in _enqueue_three(visit)]

    handled = outbox.process_due()

    assert handled == 3
    for row in _rows(ids):
        assert (row.status, row.attempts, row.last_error) == ("sent", 1, None)
        assert row.locked_until is None and row.sent_at is not None
        stored = _sandbox_events(live_server, row.business_identifier)
        assert len(stored) == 1
        assert stored[0]["id"] == row.remote_id
        AuditEvent.model_validate(stored[0])
    assert outbox.process_due() == 0


def test_enqueue_is_part_of_the_callers_transaction(ctx, live_server):
    visit = _visit(live_server.url + "/sandbox/fhir")
    visit_id = visit.appointment.id

    outbox.enqueue_audit_event(visit.appointment, "visit-ended", at=utcnow(), event_key="x-1",
                               actor=visit.provider)
    db.session.rollback()

    assert db.session.scalar(sa.select(sa.func.count()).select_from(WritebackOutbox)
                             .where(WritebackOutbox.appointment_id == visit_id)) == 0


def test_the_same_fact_is_queued_once(ctx, live_server):
    visit = _visit(live_server.url + "/sandbox/fhir")

    first = outbox.enqueue_audit_event(visit.appointment, "visit-ended", at=utcnow(),
                                       event_key="end-1", actor=visit.provider)
    second = outbox.enqueue_audit_event(visit.appointment, "visit-ended", at=utcnow(),
                                        event_key="end-1", actor=visit.provider)
    db.session.commit()

    assert first is second


def test_server_errors_are_retried_with_backoff_and_every_event_arrives_once(
        ctx, live_server, proxy):
    visit = _visit(proxy.fhir_base)
    ids = [row.id for row in _enqueue_three(visit)]
    t0 = utcnow()
    proxy.mode = "fail-500"

    assert outbox.process_due(now=t0) == 3
    first = _rows(ids)
    assert {(r.status, r.attempts, r.last_error) for r in first} == {
        ("pending", 1, "HTTP 500 exception")}  # the code only: the body named a patient
    assert all(1.6 <= (r.next_attempt_at - t0).total_seconds() <= 2.4 for r in first)
    assert outbox.process_due(now=t0 + timedelta(seconds=1)) == 0  # not due yet

    t1 = t0 + timedelta(seconds=3)
    assert outbox.process_due(now=t1) == 3
    second = _rows(ids)
    assert {r.attempts for r in second} == {2}
    assert all(3.2 <= (r.next_attempt_at - t1).total_seconds() <= 4.8 for r in second)

    proxy.mode = "forward"
    assert outbox.process_due(now=t1 + timedelta(seconds=5)) == 3

    assert {(r.status, r.attempts) for r in _rows(ids)} == {("sent", 3)}
    assert proxy.posts == 9
    for row in _rows(ids):
        assert len(_sandbox_events(live_server, row.business_identifier)) == 1


def test_a_lost_reply_does_not_create_a_duplicate(ctx, live_server, proxy):
    visit = _visit(proxy.fhir_base)
    ids = [row.id for row in _enqueue_three(visit)]
    t0 = utcnow()
    proxy.mode = "lose-reply"

    outbox.process_due(now=t0)
    lost = _rows(ids)
    created = {r.business_identifier: _sandbox_events(live_server, r.business_identifier)
               for r in lost}
    assert {r.status for r in lost} == {"pending"}
    assert all(len(found) == 1 for found in created.values())  # it did reach the EHR

    proxy.mode = "forward"
    outbox.process_due(now=t0 + timedelta(minutes=1))

    for row in _rows(ids):
        assert row.status == "sent"
        stored = _sandbox_events(live_server, row.business_identifier)
        assert len(stored) == 1  # If-None-Exist found the first one
        assert row.remote_id == created[row.business_identifier][0]["id"]


def test_a_client_error_is_a_dead_letter_listed_and_requeued_by_the_cli(ctx, live_server, proxy):
    visit = _visit(proxy.fhir_base)
    ids = [row.id for row in _enqueue_three(visit)]
    proxy.mode = "fail-400"

    outbox.process_due()

    assert {(r.status, r.attempts, r.next_attempt_at) for r in _rows(ids)} == {
        ("failed", 1, None)}
    runner = live_server.app.test_cli_runner()
    listed = json.loads(runner.invoke(args=["outbox", "list", "--status", "failed",
                                            "--json"]).output)
    mine = [row for row in listed if row["id"] in ids]
    assert len(mine) == len(listed) == 3
    assert {(row["status"], row["attempts"], row["last_error"]) for row in mine} == {
        ("failed", 1, "HTTP 400 invalid")}
    assert all(row["created_at"] for row in mine) and "payload" not in mine[0]

    proxy.mode = "forward"
    result = runner.invoke(args=["outbox", "retry", str(ids[0])])
    assert result.exit_code == 0 and "Requeued 1" in result.output
    outbox.process_due()

    assert [r.status for r in _rows(ids)] == ["sent", "failed", "failed"]
    assert "Requeued 2" in runner.invoke(args=["outbox", "retry", "--all-failed"]).output
    outbox.process_due()
    assert {r.status for r in _rows(ids)} == {"sent"}


def test_a_real_validation_error_from_the_ehr_is_a_dead_letter(ctx, live_server):
    visit = _visit(live_server.url + "/sandbox/fhir")
    row = outbox.enqueue_audit_event(visit.appointment, "visit-ended", at=utcnow(),
                                     event_key="bad-1", actor=visit.provider)
    row.payload = {**row.payload, "bogus": True}
    db.session.commit()

    outbox.process_due()

    failed = _rows([row.id])[0]
    assert (failed.status, failed.last_error) == ("failed", "HTTP 400 structure")


def test_retries_stop_after_max_attempts(ctx, live_server, proxy, monkeypatch):
    monkeypatch.setitem(live_server.app.config, "OUTBOX_MAX_ATTEMPTS", 2)
    visit = _visit(proxy.fhir_base)
    row_id = _enqueue_three(visit)[0].id
    proxy.mode = "fail-500"
    t0 = utcnow()

    outbox.process_due(now=t0)
    outbox.process_due(now=t0 + timedelta(minutes=1))

    row = _rows([row_id])[0]
    assert (row.status, row.attempts, row.last_error) == ("failed", 2, "HTTP 500 exception")


def test_an_unreachable_ehr_is_retried(ctx, live_server):
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_port
    closed.server_close()
    visit = _visit(f"http://127.0.0.1:{port}/fhir")
    row_id = _enqueue_three(visit)[0].id

    outbox.process_due()

    row = _rows([row_id])[0]
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error == "token: smart-configuration: ConnectionError"


def test_a_failed_token_request_is_kept_for_the_health_report(ctx, live_server):
    closed = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = closed.server_port
    closed.server_close()
    visit = _visit(f"http://127.0.0.1:{port}/fhir")
    _enqueue_three(visit)
    db.session.commit()

    outbox.process_due()

    errors = db.session.scalars(sa.select(BackendTokenFailure.error).where(
        BackendTokenFailure.endpoint_id == visit.appointment.endpoint_id)).all()
    assert 1 <= len(errors) <= 3  # one per attempt that asked for a token
    assert set(errors) == {"EhrUnavailable"}  # the class only, no address or message


def test_a_revoked_token_is_replaced_and_the_post_retried_at_once(ctx, live_server):
    visit = _visit(live_server.url + "/sandbox/fhir")
    first, second, _ = [row.id for row in _enqueue_three(visit)]
    outbox.process_due(limit=1)  # caches a backend token
    with live_server.app.app_context():
        db.session.execute(sa.update(SandboxAccessToken).values(revoked_at=utcnow()))
        db.session.commit()

    outbox.process_due()

    rows = _rows([first, second])
    assert [(r.status, r.attempts) for r in rows] == [("sent", 1), ("sent", 1)]


def test_backend_token_is_cached_until_near_expiry(ctx, live_server):
    endpoint = _endpoint(live_server.url + "/sandbox/fhir")

    token = backend_auth.access_token(endpoint)

    assert backend_auth.access_token(endpoint) == token
    backend_auth.forget(endpoint)
    assert backend_auth.access_token(endpoint) != token


def test_two_claimers_never_claim_the_same_row(ctx, live_server):
    visit = _visit(live_server.url + "/sandbox/fhir")
    for number in range(12):
        outbox.enqueue_audit_event(visit.appointment, "participant-connected", at=utcnow(),
                                   event_key=f"race-{number}", participant=visit.patient)
    db.session.commit()
    now = utcnow()
    barrier = threading.Barrier(2)
    results: list[list[int]] = []

    def claim() -> None:
        with live_server.app.app_context():
            barrier.wait()
            results.append(outbox.claim_due(now, limit=50))
            db.session.remove()

    threads = [threading.Thread(target=claim) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    first, second = results
    assert not set(first) & set(second)
    assert len(first) + len(second) == 12


def test_a_lease_blocks_others_until_it_runs_out(ctx, live_server):
    visit = _visit(live_server.url + "/sandbox/fhir")
    _enqueue_three(visit)
    now = utcnow()
    lease = float(live_server.app.config["OUTBOX_LEASE_SECONDS"])

    claimed = outbox.claim_due(now, limit=50)

    assert claimed
    assert outbox.claim_due(now + timedelta(seconds=lease - 1), limit=50) == []
    # The claimer died: once its lease is over another worker takes the rows over.
    assert set(outbox.claim_due(now + timedelta(seconds=lease + 1), limit=50)) == set(claimed)


def test_state_survives_a_restart(ctx, live_server, proxy):
    """Nothing lives in memory: a fresh app on the same database finishes the job."""
    from app import create_app

    visit = _visit(proxy.fhir_base)
    ids = [row.id for row in _enqueue_three(visit)]
    proxy.mode = "fail-500"
    outbox.process_due()
    proxy.mode = "forward"
    config = {key: live_server.app.config[key] for key in (
        "TESTING", "SECRET_KEY", "ASYNC_MODE", "LOG_FORMAT", "PUBLIC_BASE_URL")}
    restarted = create_app({**config, "DATABASE_URL": live_server.app.config["DATABASE_URL"],
                            "INSTANCE_PATH": live_server.app.instance_path, "SANDBOX": False})
    backend_auth.clear_cache()

    with restarted.app_context():
        outbox.process_due(now=utcnow() + timedelta(minutes=1))
        statuses = {db.session.get(WritebackOutbox, row_id).status for row_id in ids}
        db.session.remove()
        db.engine.dispose()

    assert statuses == {"sent"}


# --- delivery at volume: concurrency, pauses, leases ----------------------------------------

def test_posts_to_one_ehr_are_concurrent_up_to_its_limit_and_no_further(
        ctx, standin, monkeypatch):
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 3)
    ehr = standin(delay=0.05)
    ids = _enqueue(_visit(ehr.fhir_base), 12)

    handled = outbox.process_due()

    assert handled == 12
    assert ehr.max_in_flight == 3
    assert {(r.status, r.attempts) for r in _rows(ids)} == {("sent", 1)}


def test_a_slow_ehr_does_not_hold_up_deliveries_to_another(ctx, standin, monkeypatch):
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 2)
    slow, fast = standin(), standin()
    slow.released.clear()  # it answers nothing until told to
    slow_ids = _enqueue(_visit(slow.fhir_base), 4)
    fast_ids = _enqueue(_visit(fast.fhir_base), 4)

    thread, results = _in_background(ctx, outbox.process_due)

    assert fast.wait_for_posts(4)
    assert slow.in_flight == 2  # its two slots, and no more
    slow.released.set()
    thread.join(timeout=30)
    assert not thread.is_alive() and results == [8]
    assert {r.status for r in _rows(slow_ids + fast_ids)} == {"sent"}


def test_a_429_pauses_that_ehr_until_retry_after_then_its_backlog_drains(
        ctx, standin, monkeypatch):
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 2)
    busy, other = standin(retry_after=30), standin()
    busy_ids = _enqueue(_visit(busy.fhir_base), 6)
    other_ids = _enqueue(_visit(other.fhir_base), 3)
    t0 = utcnow()

    handled = outbox.process_due(now=t0)

    tried = [r for r in _rows(busy_ids) if r.attempts]
    assert 1 <= len(tried) <= 2
    assert busy.throttled == len(tried)  # the first answers paused it: nothing more was sent
    assert {(r.status, r.last_error) for r in tried} == {("pending", "HTTP 429")}
    assert all(r.next_attempt_at >= t0 + timedelta(seconds=30) for r in tried)
    assert {r.status for r in _rows(other_ids)} == {"sent"}  # the other EHR went on
    assert handled == len(tried) + 3

    assert outbox.process_due(now=t0 + timedelta(seconds=10)) == 0  # still paused
    assert busy.throttled == len(tried)

    busy.retry_after = None
    assert outbox.process_due(now=t0 + timedelta(seconds=31)) == 6

    assert {r.status for r in _rows(busy_ids)} == {"sent"}
    assert set(busy.arrived.values()) == {1} and len(busy.arrived) == 6


def test_two_delivery_passes_at_once_send_every_row_exactly_once(ctx, standin, monkeypatch):
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 4)
    ehr = standin(delay=0.01)
    ids = _enqueue(_visit(ehr.fhir_base), 40)
    barrier = threading.Barrier(2)

    def deliver() -> int:
        barrier.wait()
        return outbox.process_due()

    passes = [_in_background(ctx, deliver) for _ in range(2)]
    for thread, _ in passes:
        thread.join(timeout=60)

    assert sum(results[0] for _, results in passes) == 40
    assert len(ehr.arrived) == 40 and set(ehr.arrived.values()) == {1}
    assert {(r.status, r.attempts) for r in _rows(ids)} == {("sent", 1)}
    assert ehr.max_in_flight <= 4  # the limit is the process's, whichever pass claims


def test_each_claim_has_a_lease_of_its_own_that_holds_while_the_row_is_sent(
        ctx, live_server, standin, monkeypatch):
    """A pass that takes longer than a lease must not send rows whose lease ran out."""
    monkeypatch.setitem(ctx.config, "OUTBOX_LEASE_SECONDS", 1.0)
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 1)
    remaining: dict[str, float] = {}

    def lease_left(identifier: str) -> None:
        with live_server.app.app_context():
            lease = db.session.execute(sa.select(WritebackOutbox.locked_until).filter_by(
                business_identifier=identifier)).scalar_one()
            remaining[identifier] = (lease - utcnow()).total_seconds()
            db.session.remove()

    ehr = standin(delay=0.3, on_post=lease_left)
    ids = _enqueue(_visit(ehr.fhir_base), 5)

    outbox.process_due()  # about 1.5 s, one row at a time

    assert len(remaining) == 5
    assert min(remaining.values()) > 0.5, remaining
    assert {(r.status, r.attempts) for r in _rows(ids)} == {("sent", 1)}


def test_a_post_slower_than_the_lease_keeps_its_row_while_other_passes_look(
        ctx, live_server, standin, monkeypatch):
    """The lease is renewed while the EHR takes its time: no other pass sends it again."""
    monkeypatch.setitem(ctx.config, "OUTBOX_LEASE_SECONDS", 1.5)
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 2)  # a slot is free
    posted = threading.Event()
    ehr = standin(delay=4.0, on_post=lambda _identifier: posted.set())
    [row_id] = _enqueue(_visit(ehr.fhir_base), 1)

    thread, results = _in_background(ctx, outbox.process_due)
    assert posted.wait(timeout=30)
    others, leases_left = [], []
    while thread.is_alive():
        others.append(outbox.process_due())
        [row] = _rows([row_id])
        if row.status == "pending":
            leases_left.append((row.locked_until - utcnow()).total_seconds())
        thread.join(timeout=0.2)

    assert results == [1]
    assert others and set(others) == {0}
    assert leases_left and min(leases_left) > 0, leases_left
    assert sum(ehr.arrived.values()) == 1
    assert [(r.status, r.attempts, r.claimed_by) for r in _rows([row_id])] == [("sent", 1, None)]


def test_rows_of_a_process_that_stopped_renewing_are_taken_over_when_the_lease_ends(
        ctx, live_server):
    """A claimer that died renews nothing: its rows are due again one lease after its
    last renewal, whoever it was."""
    visit = _visit(live_server.url + "/sandbox/fhir")
    ids = _enqueue(visit, 2)
    now = utcnow()
    lease = float(ctx.config["OUTBOX_LEASE_SECONDS"])
    db.session.execute(sa.update(WritebackOutbox).where(WritebackOutbox.id.in_(ids))
                       .values(claimed_by="gone-host:1:abc", attempts=1,
                               locked_until=now + timedelta(seconds=lease),
                               next_attempt_at=now + timedelta(seconds=lease)))
    db.session.commit()

    before = outbox.process_due(now=now + timedelta(seconds=lease - 1))
    after = outbox.process_due(now=now + timedelta(seconds=lease + 1))

    assert (before, after) == (0, 2)
    assert [(r.status, r.attempts, r.claimed_by) for r in _rows(ids)] == [
        ("sent", 2, None), ("sent", 2, None)]


def test_a_result_is_recorded_only_under_the_claim_that_made_the_attempt(
        ctx, live_server, standin, monkeypatch):
    """Our lease ran out and another process claimed the row meanwhile: our late result
    is not recorded over its claim."""
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 1)
    ehr = standin()
    [row_id] = _enqueue(_visit(ehr.fhir_base), 1)

    def taken_over(_identifier: str) -> None:
        with live_server.app.app_context():
            db.session.execute(sa.update(WritebackOutbox).filter_by(id=row_id).values(
                claimed_by="other-host:2:def", attempts=WritebackOutbox.attempts + 1))
            db.session.commit()
            db.session.remove()

    ehr.on_post = taken_over

    outbox.process_due()

    [row] = _rows([row_id])
    assert (row.status, row.attempts, row.claimed_by) == ("pending", 2, "other-host:2:def")


def test_committing_an_outbox_row_wakes_the_waiting_delivery_loop(
        ctx, live_server, monkeypatch):
    monkeypatch.setitem(ctx.config, "OUTBOX_POLL_SECONDS", 60.0)
    visit = _visit(live_server.url + "/sandbox/fhir")
    started = time.monotonic()

    def one_loop_turn() -> int:
        outbox.deliver_due_writebacks()  # delivers, then waits for a wake or 60 s
        return 0

    thread, _ = _in_background(ctx, one_loop_turn)
    ids: list[int] = []
    while thread.is_alive() and time.monotonic() - started < 10:
        ids += _enqueue(visit, 1)  # the loop may not be waiting yet: commit until it wakes
        thread.join(timeout=0.05)

    assert not thread.is_alive()
    outbox.process_due()
    assert {r.status for r in _rows(ids)} == {"sent"}


def test_a_stopping_process_finishes_its_posts_in_flight_and_claims_no_more(
        ctx, standin, monkeypatch):
    """A deploy's SIGTERM (ops/server.stop): the POSTs in flight are answered and their
    results written before the process goes, so nobody sends them again; rows queued
    meanwhile wait for the next process."""
    monkeypatch.setitem(ctx.config, "OUTBOX_CONCURRENCY_PER_ENDPOINT", 2)
    posted = threading.Event()
    ehr = standin(delay=0.5, on_post=lambda _identifier: posted.set())
    visit = _visit(ehr.fhir_base)
    sent = _enqueue(visit, 2)

    thread, results = _in_background(ctx, outbox.process_due)
    assert posted.wait(timeout=30)
    later = _enqueue(visit, 1)  # queued while the process is stopping
    still_running = outbox.finish_in_flight(timeout=30)
    thread.join(timeout=30)

    assert still_running == 0 and not thread.is_alive()
    assert results == [2]
    db.session.expire_all()
    assert [(r.status, r.attempts) for r in _rows(sent)] == [("sent", 1)] * 2
    assert [(r.status, r.attempts) for r in _rows(later)] == [("pending", 0)]
    assert sum(ehr.arrived.values()) == 2
    assert outbox.process_due() == 0, "a stopping process claims nothing"
