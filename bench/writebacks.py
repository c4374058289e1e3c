"""Write-back outbox throughput and cost: AuditEvents delivered per second, server CPU per
write-back, duplicates, and the CPU an idle outbox costs.

Runs as ``python app.py`` does: gevent monkey-patched, every background loop started
(``ops.background.start``: outbox delivery, presence heartbeats; ``--only-outbox`` for
the outbox's alone). Queues ``--events`` AuditEvents on a fresh database, lets the loops
deliver them to the FHIR stand-in (started here on a free port, in its own process,
unless ``--fhir-base`` names one), then measures the process idle with an empty queue.
CPU is ``time.process_time()`` of this process only: the stand-in's is not counted.

    .venv/bin/python bench/writebacks.py                      # SQLite in a temp folder
    .venv/bin/python bench/writebacks.py --postgres postgresql://postgres@127.0.0.1:5432
    .venv/bin/python bench/writebacks.py --limit-per-s 100    # an EHR that answers 429
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import timedelta  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flask_migrate  # noqa: E402
import gevent  # noqa: E402
import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from app import create_app  # noqa: E402
from ehr import keys, outbox  # noqa: E402
from ehr.models import WritebackOutbox, WritebackStatus  # noqa: E402
from ehr.services import ensure_endpoint  # noqa: E402
from extensions import db  # noqa: E402
from ops import background  # noqa: E402
from settings import sqlalchemy_url  # noqa: E402
from visits.models import Appointment, Participant, utcnow  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ACTIONS = ("participant-connected", "participant-admitted", "visit-ended")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# bench/fhir_standin.py served with Nagle off, as an EHR's front end (nginx, a load
# balancer) serves: gevent's WSGI server leaves it on, and every reply then waits ~40 ms
# for our delayed ACK (ops/server.py), which is the stand-in's cost, not the outbox's.
_NODELAY_STANDIN = """
import socket, sys
sys.path.insert(0, {here!r})
import fhir_standin
from gevent.pywsgi import WSGIHandler, WSGIServer

class NoDelay(WSGIHandler):
    def handle(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle()

base = "http://127.0.0.1:{port}/fhir"
WSGIServer(("127.0.0.1", {port}), fhir_standin.Standin(base, {delay_s}, {limit}), log=None,
           handler_class=NoDelay).serve_forever()
"""


@contextmanager
def standin(delay_ms: float, limit_per_s: float | None, nagle: bool):
    """The FHIR stand-in in a process of its own; yields its FHIR base URL."""
    port = _free_port()
    if nagle:
        command = [sys.executable, os.path.join(HERE, "fhir_standin.py"), "--port", str(port),
                   "--delay-ms", str(delay_ms)]
        if limit_per_s:
            command += ["--limit-per-s", str(limit_per_s)]
    else:
        command = [sys.executable, "-c", _NODELAY_STANDIN.format(
            here=HERE, port=port, delay_s=delay_ms / 1000, limit=limit_per_s)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/fhir"
    deadline = time.monotonic() + 10
    while True:
        try:
            requests.get(f"http://127.0.0.1:{port}/stats", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def database(postgres: str | None):
    """A fresh database URL: a SQLite file in a temp folder, or a PostgreSQL database
    created here and dropped afterwards."""
    folder = tempfile.mkdtemp(prefix="vv-writebacks-")
    if not postgres:
        try:
            yield f"sqlite:///{folder}/app.db", folder
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    name = f"vv_writebacks_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sqlalchemy_url(postgres.rstrip("/") + "/postgres"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{postgres.rstrip('/')}/{name}", folder
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(folder, ignore_errors=True)


def enqueue(events: int, fhir_base: str) -> None:
    """``events`` AuditEvents, three per visit, queued the way the product queues them."""
    endpoint = ensure_endpoint("bench", fhir_base, client_id="virtual-visits-bench",
                               scopes="launch openid", approved_by="bench")
    now = utcnow().replace(microsecond=0)
    for index in range(0, events, len(ACTIONS)):
        appointment = Appointment(endpoint=endpoint, ehr_appointment_id=f"bench-{index}",
                                  start_at=now, end_at=now + timedelta(hours=1),
                                  timezone="America/Chicago", department_display="Clinic")
        provider = Participant(appointment=appointment, role="provider",
                               ehr_user_id=f"Practitioner/bench-dr-{index}")
        patient = Participant(appointment=appointment, role="patient",
                              ehr_user_id=f"Patient/bench-pt-{index}")
        db.session.add_all([appointment, provider, patient])
        for action in ACTIONS[:events - index]:
            outbox.enqueue_audit_event(appointment, action, at=now, event_key=f"b{index}",
                                       participant=patient, actor=provider)
        if index % 300 == 0:
            db.session.commit()
    db.session.commit()


def pending() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(WritebackOutbox)
                             .where(WritebackOutbox.status == WritebackStatus.PENDING))


def _outbox_loop(app) -> None:
    """The outbox's background loop alone (what ``ops.background`` runs for it)."""
    while True:
        with app.app_context():
            try:
                outbox.deliver_due_writebacks()
            finally:
                db.session.remove()
        gevent.sleep(0)


def run(args: argparse.Namespace, fhir_base: str, database_url: str, folder: str) -> dict:
    app = create_app({"DATABASE_URL": database_url, "INSTANCE_PATH": folder,
                      "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
                      "ASYNC_MODE": "gevent", "LOG_LEVEL": "ERROR",
                      "OUTBOX_CONCURRENCY_PER_ENDPOINT": args.concurrency})
    stats_url = fhir_base.rsplit("/fhir", 1)[0] + "/stats"
    with app.app_context():
        flask_migrate.upgrade()
        keys.rotate()
        enqueue(args.events, fhir_base)
        queued = pending()
        db.session.remove()
    before = requests.get(stats_url, timeout=5).json()

    profiler = cProfile.Profile() if args.profile else None
    if profiler:
        profiler.enable()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    if args.only_outbox:
        loops = [gevent.spawn(_outbox_loop, app)]
    else:
        loops = background.start(app)  # delivery starts at once; presence heartbeats too
    with app.app_context():
        deadline = wall0 + args.timeout
        while pending() and time.perf_counter() < deadline:
            db.session.remove()
            gevent.sleep(0.1)
        left = pending()
        db.session.remove()
    cpu1, wall1 = time.process_time(), time.perf_counter()
    if profiler:
        profiler.disable()
        profiler.dump_stats(args.profile)
    after = requests.get(stats_url, timeout=5).json()

    gevent.sleep(1.0)  # let the last pass end and the loops settle
    idle0, idle_wall0 = time.process_time(), time.perf_counter()
    gevent.sleep(args.idle_seconds)
    idle1, idle_wall1 = time.process_time(), time.perf_counter()
    gevent.killall(loops)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()

    delivered = queued - left
    return {
        "database": database_url.split(":", 1)[0],
        "queued": queued, "delivered": delivered, "left_pending": left,
        "seconds": round(wall1 - wall0, 2),
        "writebacks_per_s": round(delivered / (wall1 - wall0), 1),
        "cpu_ms_per_writeback": round((cpu1 - cpu0) * 1000 / max(delivered, 1), 3),
        "created_at_ehr": after["created"] - before["created"],
        "duplicates_at_ehr": after["duplicates"] - before["duplicates"],
        "throttled_429": after["throttled"] - before["throttled"],
        "ehr_max_in_flight": after["max_in_flight"],
        "idle_cpu_pct": round((idle1 - idle0) * 100 / (idle_wall1 - idle_wall0), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--delay-ms", type=float, default=50.0, help="the stand-in's answer delay")
    parser.add_argument("--limit-per-s", type=float, default=None,
                        help="the stand-in answers 429 + Retry-After: 1 above this rate")
    parser.add_argument("--standin-nagle", action="store_true",
                        help="run bench/fhir_standin.py as it is, Nagle on (+~40 ms a reply)")
    parser.add_argument("--fhir-base", default=None,
                        help="a stand-in already running (its /stats must be at the root)")
    parser.add_argument("--postgres", default=None,
                        help="server URL without a database, e.g. "
                             "postgresql://postgres@127.0.0.1:5432; a database is created "
                             "for the run and dropped after")
    parser.add_argument("--only-outbox", action="store_true",
                        help="start only the outbox loop, not every background loop")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the delivery into FILE (pstats); slows it down")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args()
    # Killed (a timeout, Ctrl-C): still stop the stand-in and drop the database.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with database(args.postgres) as (database_url, folder):
        if args.fhir_base:
            result = run(args, args.fhir_base, database_url, folder)
        else:
            with standin(args.delay_ms, args.limit_per_s, args.standin_nagle) as fhir_base:
                result = run(args, fhir_base, database_url, folder)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
