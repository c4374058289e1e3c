"""The write-back outbox across real server processes: ``python app.py`` (gevent, every
background loop) delivering to the FHIR stand-in of tests/integration/test_outbox.py.

A server is killed (SIGKILL) while its POSTs hang at the EHR; a restarted server sends
them again within 15 s: the dead process stopped renewing its leases, which are short
(``OUTBOX_LEASE_SECONDS``, 10 s) because a live process renews them while it waits.
Runs on a SQLite file and on PostgreSQL; the PostgreSQL variant says it was skipped when
DATABASE_URL is not set.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from contextlib import nullcontext
from pathlib import Path

import flask_migrate
import pytest
import sqlalchemy as sa

from app import create_app
from ehr import outbox
from ehr.models import WritebackOutbox
from ehr.services import ensure_endpoint
from extensions import db
from tests import factories
from tests.conftest import POSTGRES_URL, make_config, postgres_schema
from tests.integration.test_outbox import standin  # noqa: F401  (the fixture)
from visits.models import utcnow

ROOT = Path(__file__).resolve().parents[2]
ROWS = 6
RESUME_WITHIN = 15.0  # seconds from the kill to the restarted server's POSTs


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_database(request, tmp_path):
    """A database several processes share: a SQLite file, or a PostgreSQL schema."""
    if request.param == "postgresql" and not POSTGRES_URL:
        pytest.skip("DATABASE_URL is not set: no PostgreSQL to run the processes against")
    context = postgres_schema() if request.param == "postgresql" else nullcontext(
        f"sqlite:///{tmp_path / 'shared.db'}")
    with context as url:
        yield url


class _Server:
    """``python app.py`` in a process of its own, its output kept for failure messages."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.log = log_path.open("w")
        self.process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                                        stdout=self.log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=60)
        self.log.close()


def _wait(condition, seconds: float, servers: list[_Server], what: str) -> None:
    """Until ``condition()`` holds; fails with every server's output after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            outputs = "\n".join(f"--- server {n} (exit {s.process.poll()}):\n{s.output()}"
                                for n, s in enumerate(servers))
            pytest.fail(f"{what}: not within {seconds:.0f} s\n{outputs}")
        time.sleep(0.05)  # polling a condition, not waiting a fixed time


def test_a_killed_servers_write_backs_go_out_again_within_15_s_of_a_restart(
        tmp_path, monkeypatch, shared_database, standin):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    posts: list[tuple[float, str]] = []
    lock = threading.Lock()

    def seen(identifier: str) -> None:
        with lock:
            posts.append((time.monotonic(), identifier))

    ehr = standin(on_post=seen)
    ehr.released.clear()  # the EHR holds every POST until told
    config = make_config(tmp_path, DATABASE_URL=shared_database, SANDBOX=False,
                         ASYNC_MODE="gevent", HOST="127.0.0.1", PORT=0,
                         PUBLIC_BASE_URL="http://127.0.0.1:9")
    app = create_app(config)
    with app.app_context():
        flask_migrate.upgrade()
        endpoint = ensure_endpoint(f"ep-{uuid.uuid4().hex[:8]}", ehr.fhir_base,
                                   client_id="virtual-visits", scopes="launch openid",
                                   approved_by="test")
        visit = factories.make_visit(endpoint)
        for number in range(ROWS):
            outbox.enqueue_audit_event(visit.appointment, "participant-connected",
                                       at=utcnow(), event_key=f"kill-{number}",
                                       participant=visit.patient)
        db.session.commit()
        db.session.remove()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VV_")}
    env.update({f"VV_{k}": str(v) for k, v in config.items() if k != "TESTING"})
    env["PYTHONPATH"] = str(ROOT)

    def count() -> int:
        with lock:
            return len(posts)

    servers = [_Server(env, tmp_path / "first.log")]
    try:
        _wait(lambda: count() >= ROWS, 120, servers, "the first server's POSTs")
        servers[0].kill()
        killed_at = time.monotonic()
        servers.append(_Server(env, tmp_path / "restarted.log"))
        _wait(lambda: count() >= 2 * ROWS, 60, servers, "the restarted server's POSTs")
        ehr.released.set()
        _wait(lambda: _statuses(app) == {"sent"}, 60, servers, "every row sent")
    finally:
        ehr.released.set()
        for server in servers:
            server.stop()

    with lock:
        again = [at - killed_at for at, _ in posts if at > killed_at]
        tries = Counter(identifier for _, identifier in posts)
    assert len(again) == ROWS
    assert max(again) <= RESUME_WITHIN, again
    assert set(tries.values()) == {2}  # once by each server, never a third time
    with app.app_context():
        attempts = db.session.execute(sa.select(WritebackOutbox.attempts)).scalars().all()
        db.session.remove()
        db.engine.dispose()
    assert attempts == [2] * ROWS


def _statuses(app) -> set[str]:
    with app.app_context():
        statuses = set(db.session.execute(sa.select(WritebackOutbox.status)).scalars())
        db.session.remove()
        return statuses
