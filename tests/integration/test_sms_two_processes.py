"""Two OS processes run sending passes over the same due reminders at the same moment; a
local HTTP "carrier" counts what reaches it: every text exactly once.

On PostgreSQL (CI always sets DATABASE_URL) the claim is SELECT ... FOR UPDATE SKIP
LOCKED; without it, locally, the SQLite file's conditional UPDATE is what is tested.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections import Counter
from contextlib import nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path

import flask_migrate
import pytest
import sqlalchemy as sa

import at_rest
from app import create_app
from extensions import db
from notifications import scheduling
from notifications.models import PHONE_PURPOSE, SmsMessage, SmsRecipient
from tests import factories
from tests.conftest import POSTGRES_URL, make_config, postgres_schema
from tests.local_http import JsonHandler, serving
from visits.models import Appointment, Participant

ROOT = Path(__file__).resolve().parents[2]
TEXTS = 30
SEND_AT = datetime(2030, 3, 11, 14, 15, tzinfo=timezone.utc)

# One sending process: build the app, say "ready", wait for "go" on stdin (so both
# processes start their passes together), then send until nothing is due.
WORKER = r"""
import json, os, sys
from datetime import datetime
import requests
from app import create_app
from notifications.senders import Sent
from notifications.sending import send_due

class CarrierSender:
    name = "carrier"
    def __init__(self, url):
        self.url, self.http = url, requests.Session()
        self.http.trust_env = False
    def send(self, *, to, body, from_number, status_callback):
        reply = self.http.post(self.url, json={"to": to, "body": body}, timeout=30)
        reply.raise_for_status()
        return Sent(reply.json()["sid"])

app = create_app(json.loads(os.environ["SMS_TEST_CONFIG"]))
app.extensions["sms_sender"] = CarrierSender(os.environ["SMS_TEST_CARRIER"])
now = datetime.fromisoformat(os.environ["SMS_TEST_NOW"])
print("ready", flush=True)
sys.stdin.readline()
handled = 0
with app.app_context():
    while True:
        count = send_due(now, limit=3)
        if not count:
            break
        handled += count
print(json.dumps({"handled": handled}), flush=True)
"""


class Carrier:
    """A tiny stand-in for the SMS provider: records every message it is handed."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.lock = threading.Lock()
        self.url = ""
        carrier = self

        class Handler(JsonHandler):
            def do_POST(self):  # noqa: N802  (http.server's naming)
                data = self.read_json()
                with carrier.lock:
                    carrier.received.append(data)
                    sid = f"SM{len(carrier.received):06d}"
                self.send_json(201, {"sid": sid})

        self._serving = serving(Handler)

    def __enter__(self) -> Carrier:
        self.url = self._serving.__enter__() + "/messages"
        return self

    def __exit__(self, *exc) -> None:
        self._serving.__exit__(*exc)


def _seed(app) -> None:
    """TEXTS booked visits, each with one reminder due at SEND_AT."""
    with app.app_context():
        endpoint = factories.make_endpoint("clinic")
        endpoint.sms_settings = {"send_confirmation": False, "reminder_offsets_minutes": [15]}
        for number in range(TEXTS):
            start = SEND_AT + timedelta(minutes=15)
            appointment = Appointment(endpoint=endpoint, filler_id=f"F-{number}",
                                      start_at=start, end_at=start + timedelta(minutes=30),
                                      timezone="America/Chicago", department_display="Clinic")
            patient = Participant(appointment=appointment, role="patient",
                                  ehr_user_id=f"Patient/{number}")
            db.session.add_all([appointment, patient])
            db.session.flush()
            db.session.add(SmsRecipient(participant_id=patient.id, phone_line_type="mobile",
                                        phone_encrypted=at_rest.encrypt(
                                            f"+1608555{number:04d}", PHONE_PURPOSE)))
            db.session.flush()
            scheduling.appointment_changed(appointment, "created", SEND_AT - timedelta(days=2))
        db.session.commit()


@pytest.fixture
def shared_database(tmp_path):
    """PostgreSQL when DATABASE_URL is set (always in CI), else a SQLite file."""
    context = postgres_schema() if POSTGRES_URL else nullcontext(
        f"sqlite:///{tmp_path / 'shared.db'}")
    with context as url:
        yield url


def test_two_processes_send_each_due_text_exactly_once(tmp_path, monkeypatch, shared_database):
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, DATABASE_URL=shared_database, SANDBOX=False)
    app = create_app(config)
    with app.app_context():
        flask_migrate.upgrade()
    _seed(app)

    with Carrier() as carrier:
        env = {**os.environ, "SMS_TEST_CONFIG": json.dumps(config),
               "SMS_TEST_CARRIER": carrier.url, "SMS_TEST_NOW": SEND_AT.isoformat(),
               "PYTHONPATH": str(ROOT)}
        workers = [subprocess.Popen([sys.executable, "-c", WORKER], cwd=ROOT, env=env,
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                   for _ in range(2)]
        for worker in workers:
            assert worker.stdout.readline().strip() == "ready"
        for worker in workers:  # both start their passes together
            worker.stdin.write("go\n")
            worker.stdin.flush()
        results = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]

    assert all(worker.returncode == 0 for worker in workers)
    bodies = Counter(message["body"] for message in carrier.received)
    assert len(carrier.received) == TEXTS
    assert set(bodies.values()) == {1}
    assert sum(result["handled"] for result in results) == TEXTS
    with app.app_context():
        rows = db.session.execute(sa.select(SmsMessage)).scalars().all()
        assert {row.status for row in rows} == {"sent"}
        assert len({row.provider_message_id for row in rows}) == TEXTS
        db.session.remove()
        db.engine.dispose()
