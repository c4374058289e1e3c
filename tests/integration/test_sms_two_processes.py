"""Real `flask sms send-due` processes against the Twilio stand-in (tests/twilio_fake.py),
which answers each text slowly, as a loaded carrier does: every text reaches it once.

- Two processes run their sending passes over the same 8 due texts at once while the
  carrier takes 6 s per text, longer than the 5 s lease: each text is claimed when its own
  send starts and its lease renewed while the carrier answers, so no lease runs out under
  a live sender and nothing is sent twice.
- A pass is killed (SIGKILL) while a text is with the carrier; the restarted passes find
  that text "sending", look it up at the carrier, record it as sent and send the rest:
  20 texts for 20 numbers.

Both run on PostgreSQL (``SELECT ... FOR UPDATE SKIP LOCKED``) when DATABASE_URL is set,
as several sending processes run in production, else on a SQLite file (one writer at a
time). Each takes 20-30 s of waiting on the slow carrier, so they run once, not per
database.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import nullcontext
from datetime import timedelta
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
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, TwilioFake
from tests.twilio_fake import twilio_fake  # noqa: F401  (the fixture)
from visits.models import Appointment, Participant, utcnow

ROOT = Path(__file__).resolve().parents[2]
# Generous: two cores, and the rest of the suite may be running beside us.
CLI_TIMEOUT = 300.0


def _phone(number: int) -> str:
    return f"+1608555{number:04d}"


def _seed(tmp_path, database_url: str, fake: TwilioFake, count: int) -> tuple:
    """Migrate, then book ``count`` visits whose confirmation text is due now, one
    patient and number each; returns the config the processes share and the app."""
    config = make_config(tmp_path, DATABASE_URL=database_url, SANDBOX=False,
                         PUBLIC_BASE_URL="http://127.0.0.1:9", SMS_SENDER="twilio",
                         TWILIO_ACCOUNT_SID=ACCOUNT_SID, TWILIO_AUTH_TOKEN=AUTH_TOKEN,
                         TWILIO_FROM_NUMBER=FROM_NUMBER, TWILIO_API_BASE_URL=fake.url)
    app = create_app(config)
    with app.app_context():
        flask_migrate.upgrade()
        endpoint = factories.make_endpoint("clinic")
        endpoint.sms_settings = {"reminder_offsets_minutes": []}  # the confirmation only
        now = utcnow()
        for number in range(count):
            start = now + timedelta(days=1)
            appointment = Appointment(endpoint=endpoint, filler_id=f"F-{number}",
                                      start_at=start, end_at=start + timedelta(minutes=30),
                                      timezone="America/Chicago", department_display="Clinic")
            patient = Participant(appointment=appointment, role="patient",
                                  ehr_user_id=f"Patient/{number}")
            db.session.add_all([appointment, patient])
            db.session.flush()
            db.session.add(SmsRecipient(participant_id=patient.id, phone_line_type="mobile",
                                        phone_encrypted=at_rest.encrypt(_phone(number),
                                                                        PHONE_PURPOSE)))
            db.session.flush()
            scheduling.appointment_changed(appointment, "created", now - timedelta(minutes=1))
        db.session.commit()
    return config, app


def _environment(config: dict, **extra) -> dict[str, str]:
    """The settings as a `flask` process reads them: VV_* variables, nothing inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VV_")}
    env.update({f"VV_{key}": str(value) for key, value in {**config, **extra}.items()
                if key != "TESTING" and value is not None})
    env["PYTHONPATH"] = str(ROOT)
    return env


def _send_due(env: dict[str, str]) -> subprocess.Popen:
    """`flask sms send-due`, the operators' command: one sending pass."""
    return subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "sms", "send-due"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(process: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = process.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"`flask sms send-due` did not finish in {CLI_TIMEOUT:.0f} s\n"
                    f"stdout:\n{out}\nstderr:\n{err}")
    assert process.returncode == 0, f"exit {process.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out, err


def _handled(out: str) -> int:
    found = re.search(r"Handled (\d+) due text", out)
    assert found, out
    return int(found.group(1))


def _rows(app) -> list[SmsMessage]:
    with app.app_context():
        rows = db.session.execute(sa.select(SmsMessage).order_by(SmsMessage.id)).scalars().all()
        db.session.expunge_all()
        db.session.remove()
        return rows


def _no_numbers_or_texts(output: str, count: int) -> None:
    """Neither a patient's number nor a text's body reached the processes' output."""
    for number in range(count):
        assert _phone(number)[2:] not in output
    assert "/j/" not in output and "booked" not in output


def _dispose(app) -> None:
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def production_database(tmp_path):
    """Where several sending processes run in production: PostgreSQL, or a SQLite file
    when no PostgreSQL is configured. (Half a minute per run with a slow carrier: once is
    enough.)"""
    context = postgres_schema() if POSTGRES_URL else nullcontext(
        f"sqlite:///{tmp_path / 'shared.db'}")
    with context as url:
        yield url


TEXTS = 8


def test_two_processes_send_each_due_text_exactly_once(tmp_path, monkeypatch,
                                                        production_database, twilio_fake):
    monkeypatch.chdir(tmp_path)
    config, app = _seed(tmp_path, production_database, twilio_fake, TEXTS)
    # The carrier answers each text in 6 s, longer than the 5 s lease: only the renewal
    # keeps a live sender's text its own (and a pass that claimed its whole batch at once
    # would lose the later ones to the other pass).
    twilio_fake.delay = 6.0
    env = _environment(config, SMS_LEASE_SECONDS=5)

    processes = [_send_due(env) for _ in range(2)]
    outputs = [_finish(process) for process in processes]

    accepted = twilio_fake.messages
    assert len(twilio_fake.posts()) == TEXTS
    assert Counter(m["to"] for m in accepted) == {_phone(n): 1 for n in range(TEXTS)}
    assert len({m["body"] for m in accepted}) == TEXTS
    handled = [_handled(out) for out, _ in outputs]
    assert sum(handled) == TEXTS
    assert min(handled) >= 1, handled  # both passes really ran side by side
    rows = _rows(app)
    assert {row.status for row in rows} == {"sent"}
    assert {row.provider_message_id for row in rows} == {m["sid"] for m in accepted}
    assert {row.attempts for row in rows} == {1}
    logs = "\n".join(out + err for out, err in outputs)
    assert "lost" not in logs, logs
    _no_numbers_or_texts(logs, TEXTS)
    _dispose(app)


def test_a_pass_killed_mid_send_then_restarted_sends_each_text_once(
        tmp_path, monkeypatch, production_database, twilio_fake):
    monkeypatch.chdir(tmp_path)
    config, app = _seed(tmp_path, production_database, twilio_fake, 20)
    twilio_fake.delay = 1.0
    # A short lease, so the restart does not wait long for the killed pass's text.
    env = _environment(config, SMS_LEASE_SECONDS=3)

    first = _send_due(env)
    reached = twilio_fake.wait_for(lambda fake: len(fake.posts()) >= 6, timeout=120)
    first.send_signal(signal.SIGKILL)  # the sixth text is with the carrier now
    first_out, first_err = first.communicate(timeout=60)
    assert reached, f"no sixth text\nstdout:\n{first_out}\nstderr:\n{first_err}"
    assert first.returncode == -signal.SIGKILL
    at_kill = Counter(row.status for row in _rows(app))
    # Twilio creates the sixth message although nobody waits for its answer any more.
    assert twilio_fake.wait_for(lambda fake: len(fake.messages) >= 6, timeout=60)

    outputs = []
    deadline = time.monotonic() + 240
    while {row.status for row in _rows(app)} != {"sent"}:
        assert time.monotonic() < deadline, (Counter(r.status for r in _rows(app)), outputs)
        outputs.append(_finish(_send_due(env)))

    assert at_kill == {"sent": 5, "sending": 1, "scheduled": 14}
    accepted = twilio_fake.messages
    assert len(twilio_fake.posts()) == 20  # the one in doubt was looked up, not re-sent
    assert Counter(m["to"] for m in accepted) == {_phone(n): 1 for n in range(20)}
    rows = _rows(app)
    assert [row.provider_message_id for row in rows] == [
        next(m["sid"] for m in accepted if m["body"] == body)
        for body in [_body(app, row) for row in rows]]
    lookups = [r for r in twilio_fake.requests if r["method"] == "GET"]
    assert lookups and all(r["query"].get("To") in {_phone(n) for n in range(20)}
                           for r in lookups)
    _no_numbers_or_texts("\n".join(out + err for out, err in outputs) + first_err, 20)
    _dispose(app)


def _body(app, row: SmsMessage) -> str:
    from notifications.models import BODY_PURPOSE

    with app.app_context():
        return at_rest.decrypt(row.body_encrypted, BODY_PURPOSE)
