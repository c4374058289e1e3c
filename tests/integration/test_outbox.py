"""The write-back outbox against the sandbox EHR over real HTTP, on SQLite and PostgreSQL.

Failures are staged with a small forwarding proxy in front of the sandbox: it passes
everything through (discovery, searches) and, when told to, answers POSTs to
/AuditEvent with a 500 or a 400, or forwards them and then "loses" the reply. Time is
advanced by passing ``now`` to ``process_due``, never by sleeping.
"""
from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import sqlalchemy as sa
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import create_engine, text

from ehr import backend_auth, outbox
from ehr.models import EhrEndpoint, WritebackOutbox
from ehr.services import ensure_endpoint
from extensions import db
from sandbox_ehr.models import SandboxAccessToken
from settings import sqlalchemy_url
from tests import factories
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
    with live_server.app.app_context():
        db.session.execute(sa.delete(WritebackOutbox))
        db.session.commit()
        yield live_server.app
        db.session.remove()


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
