"""Sending passes with a controlled clock: reminders at their minute, quiet hours, STOP,
retries, deleted phones; the admin's test text and a provider texting a guest's link."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

import at_rest
from extensions import db
from notifications import optout
from notifications.models import PHONE_PURPOSE, SmsMessage, SmsRecipient
from notifications.retention import purge_finished
from notifications.senders import SendFailed
from notifications.sending import InvalidPhone, send_due_texts, send_test_message
from tests import factories
from tests.integration.test_sms_scheduling import (  # noqa: F401  (fixtures)
    ENDPOINT,
    PHONE,
    START_UTC,
    build_app,
    hl7_key,
    post,
    send,
    sent,
    set_sms_settings,
    siu,
    sms_app,
    texts,
)
from tests.integration.test_visit_realtime import staff_socket
from visits.models import Appointment, Participant, utcnow

MINUTE = timedelta(minutes=1)


def new_filler() -> str:
    return f"F-{uuid.uuid4().hex[:8]}"


def statuses(app, filler: str) -> list[tuple[str, str, str | None]]:
    return [(m.kind, m.status, m.error_message) for m in texts(app, filler)]


def test_each_reminder_goes_out_at_its_minute_and_not_a_minute_before(sms_app, hl7_key):
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler, language="eng"))
    send(sms_app, utcnow())  # the confirmation
    day_before, quarter_before = START_UTC - timedelta(days=1), START_UTC - timedelta(minutes=15)

    early = send(sms_app, day_before - MINUTE)
    on_time = send(sms_app, day_before)
    early_again = send(sms_app, quarter_before - MINUTE)
    on_time_again = send(sms_app, quarter_before)

    assert (early, on_time, early_again, on_time_again) == (0, 1, 0, 1)
    assert [t["body"].split(":")[1].strip() for t in sent(sms_app)] == [
        "your video visit is booked for Mon, Mar 11 at 9",
        "reminder, your video visit is Mon, Mar 11 at 9",
        "reminder, your video visit is Mon, Mar 11 at 9"]
    assert [m.sent_at for m in texts(sms_app, filler) if m.kind == "reminder"] == [
        day_before, quarter_before]


def test_a_reminder_picked_up_after_the_start_is_not_sent(sms_app, hl7_key):
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler))
    send(sms_app, utcnow())

    send(sms_app, START_UTC + MINUTE)

    assert len(sent(sms_app)) == 1
    assert [s for s in statuses(sms_app, filler) if s[0] == "reminder"] == [
        ("reminder", "cancelled", "visit already started")] * 2


def test_quiet_hours_postpone_a_reminder_to_their_end(sms_app, hl7_key):
    set_sms_settings(sms_app, reminder_offsets_minutes=[60], quiet_start="21:00",
                     quiet_end="08:00")
    filler = new_filler()
    # 08:30 in Chicago (13:30 UTC): the reminder falls at 07:30, inside quiet hours.
    post(sms_app, hl7_key, siu(filler, start="20300311083000"))
    send(sms_app, utcnow())
    quiet_end = datetime(2030, 3, 11, 13, 0, tzinfo=timezone.utc)

    send(sms_app, datetime(2030, 3, 11, 12, 30, tzinfo=timezone.utc))
    still_quiet = send(sms_app, quiet_end - MINUTE)
    send(sms_app, quiet_end)

    assert still_quiet == 0
    assert len(sent(sms_app)) == 2
    [reminder] = [m for m in texts(sms_app, filler) if m.kind == "reminder"]
    assert (reminder.status, reminder.sent_at) == ("sent", quiet_end)


def test_quiet_hours_lasting_past_the_start_suppress_the_reminder(sms_app, hl7_key):
    set_sms_settings(sms_app, reminder_offsets_minutes=[15])
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler, start="20300311074000"))  # 07:40, quiet until 08:00
    send(sms_app, utcnow())

    send(sms_app, datetime(2030, 3, 11, 12, 25, tzinfo=timezone.utc))

    assert len(sent(sms_app)) == 1
    assert ("reminder", "suppressed", "quiet hours") in statuses(sms_app, filler)


def test_stop_is_honoured_at_once_for_texts_already_planned(sms_app, hl7_key):
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler))
    with sms_app.app_context():
        optout.opt_out(PHONE)
        db.session.commit()

    send(sms_app, utcnow())
    send(sms_app, START_UTC - timedelta(minutes=15))

    assert sent(sms_app) == []
    assert {s[1:] for s in statuses(sms_app, filler)} == {("suppressed", "opted out")}


def test_a_failing_carrier_is_retried_with_backoff_then_marked_failed(sms_app, hl7_key):
    sms_app.config["SMS_MAX_ATTEMPTS"] = 3
    sms_app.extensions["sms_sender"].failures = [
        SendFailed("carrier unavailable", code="30001") for _ in range(3)]
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler))
    t0 = utcnow()

    handled = [send(sms_app, t0), send(sms_app, t0 + timedelta(seconds=29)),
               send(sms_app, t0 + timedelta(seconds=30)),
               send(sms_app, t0 + timedelta(seconds=89)),
               send(sms_app, t0 + timedelta(seconds=90))]

    assert handled == [1, 0, 1, 0, 1]
    [confirmation] = [m for m in texts(sms_app, filler) if m.kind == "confirmation"]
    assert (confirmation.status, confirmation.attempts, confirmation.error_code,
            confirmation.error_message) == ("failed", 3, "30001", "carrier unavailable")
    assert sent(sms_app) == []


def test_a_refusal_that_a_retry_cannot_fix_fails_at_once(sms_app, hl7_key):
    sms_app.extensions["sms_sender"].failures = [
        SendFailed("not a mobile number", code="21614", retryable=False)]
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler))

    send(sms_app, utcnow())

    assert ("confirmation", "failed", "not a mobile number") in statuses(sms_app, filler)


def _database_bytes(app) -> bytes:
    """Everything SQLite keeps on disk for the app's database (file and its WAL)."""
    path = Path(app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///"))
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


def test_phone_and_texts_are_deleted_once_the_visit_is_over(tmp_path, monkeypatch, hl7_key,
                                                            database_url):
    app = build_app(tmp_path, monkeypatch, hl7_key, database_url)
    filler = new_filler()
    post(app, hl7_key, siu(filler))
    send(app, utcnow())
    with app.app_context():
        [cipher] = db.session.execute(sa.select(SmsRecipient.phone_encrypted)).scalars().all()
        bodies = [b for b in db.session.execute(sa.select(SmsMessage.body_encrypted)).scalars()]
        grace = timedelta(minutes=120)  # the endpoint's link_valid_after_end_minutes
        end = START_UTC + timedelta(minutes=30)
        during = purge_finished(end + grace - MINUTE)

        after = purge_finished(end + grace)

        raw_phones = db.session.execute(sa.text("SELECT phone_encrypted FROM sms_recipients"))
        raw_bodies = db.session.execute(sa.text(
            "SELECT body_encrypted FROM sms_messages WHERE body_encrypted IS NOT NULL"))
        assert (during, after) == (0, 1)
        assert raw_phones.all() == [] and raw_bodies.all() == []
        if db.engine.dialect.name == "sqlite":
            stored = _database_bytes(app)
            assert cipher not in stored
            assert not any(body in stored for body in bodies)
        else:
            found = db.session.execute(sa.text(
                "SELECT count(*) FROM sms_recipients WHERE phone_encrypted = :c"), {"c": cipher})
            assert found.scalar() == 0
        db.session.remove()
        db.engine.dispose()
    assert {s[1] for s in statuses(app, filler) if s[0] == "reminder"} == {"cancelled"}


def test_the_retention_pass_reads_what_is_still_held_not_every_visit(sms_app, hl7_key):
    """It runs every few seconds in every process: a year of visits must not make each
    pass walk the whole appointments or texts table (issue 11, periodic work)."""
    post(sms_app, hl7_key, siu(new_filler()))
    send(sms_app, utcnow())
    statements: list[tuple[str, object]] = []

    def grab(_conn, _cursor, statement, params, _context, _many):
        statements.append((statement, params))

    with sms_app.app_context():
        endpoint = factories.make_endpoint()
        for number in range(30):  # visits over long ago, with nothing of theirs left
            old = factories.make_visit(endpoint, ehr_id=f"old-{number}").appointment
            old.start_at -= timedelta(days=40)
            old.end_at -= timedelta(days=40)
        db.session.commit()
        sa.event.listen(db.engine, "before_cursor_execute", grab)
        try:
            purged = purge_finished(utcnow())
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", grab)
        with db.engine.connect() as connection:
            plans = [row[-1] for statement, params in statements
                     for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                           params)]
        kept = db.session.execute(sa.select(sa.func.count(SmsRecipient.id))).scalar()

    assert (purged, kept) == (0, 1)  # the booked visit keeps its phone
    assert not [line for line in plans if line.startswith("SCAN appointments")]
    assert not [line for line in plans if line.startswith("SCAN participants")]
    body_reads = [line for line in plans if "sms_messages" in line]
    assert body_reads and all("ix_sms_messages_held_bodies" in line for line in body_reads)


def test_a_cancelled_visit_keeps_the_phone_until_the_cancellation_is_sent(sms_app, hl7_key):
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler))
    post(sms_app, hl7_key, siu(filler, trigger="S15"))

    with sms_app.app_context():
        kept = purge_finished(utcnow())
    send(sms_app, utcnow())
    with sms_app.app_context():
        purged = purge_finished(utcnow())
        phones = db.session.execute(sa.select(SmsRecipient)).scalars().all()

    assert (kept, purged, phones) == (0, 1, [])
    assert "cancelada" in sent(sms_app)[-1]["body"]  # the patient reads Spanish (PID-15)


def test_admin_test_text_goes_to_the_typed_number(sms_app):
    with sms_app.app_context():
        endpoint = factories.make_endpoint(ENDPOINT)

        row = send_test_message(endpoint, "(608) 555-0142", "es", utcnow())
        with pytest.raises(InvalidPhone):
            send_test_message(endpoint, "555-01", "es", utcnow())
        status, kind, appointment_id = row.status, row.kind, row.appointment_id

    assert (status, kind, appointment_id) == ("sent", "test", None)
    [text] = sent(sms_app)
    assert text["to"] == "+16085550142"
    assert ENDPOINT in text["body"]
    assert text["body"].endswith("Responda STOP para dejar de recibir mensajes.")  # in Spanish


@pytest.fixture
def visit(sms_app):
    with sms_app.app_context():
        yield factories.make_visit(factories.make_endpoint(ENDPOINT))


def test_provider_texts_a_guest_their_link_without_keeping_the_number(sms_app, visit):
    staff = staff_socket(sms_app, visit.provider)

    reply = staff.emit("add_participant", {"role": "guest", "display_name": "Maria",
                                           "phone": "(608) 555-0199"}, callback=True)

    assert (reply["ok"], reply["texted"], reply["text_error"]) == (True, True, None)
    [text] = sent(sms_app)
    assert text["to"] == "+16085550199" and reply["link"] in text["body"]
    with sms_app.app_context():
        guest = db.session.get(Participant, reply["participant_id"])
        assert guest.sms_recipient is None
        [row] = db.session.execute(sa.select(SmsMessage).filter_by(kind="invitation")).scalars()
        assert (row.status, row.participant_id) == ("sent", guest.id)
        phones = [at_rest.decrypt(p, PHONE_PURPOSE) for p in
                  db.session.execute(sa.select(SmsRecipient.phone_encrypted)).scalars()]
    assert "+16085550199" not in phones


def test_a_bad_guest_number_is_refused_before_anyone_is_added(sms_app, visit):
    staff = staff_socket(sms_app, visit.provider)

    reply = staff.emit("add_participant", {"role": "guest", "display_name": "Maria",
                                           "phone": "12"}, callback=True)

    assert reply["ok"] is False and "phone number" in reply["error"]
    with sms_app.app_context():
        appointment = db.session.get(Appointment, visit.appointment.id)
        assert [p.role for p in appointment.participants] == ["provider", "patient"]
    assert sent(sms_app) == []


def test_an_opted_out_guest_number_is_not_texted_and_the_provider_is_told(sms_app, visit):
    with sms_app.app_context():
        optout.opt_out("+16085550199")
        db.session.commit()
    staff = staff_socket(sms_app, visit.provider)

    reply = staff.emit("add_participant", {"role": "interpreter", "display_name": "Ana",
                                           "phone": "+1 608 555 0199"}, callback=True)

    assert reply["ok"] is True and reply["texted"] is False
    assert "opted out" in reply["text_error"] and reply["link"]
    assert sent(sms_app) == []


def test_a_sender_crash_is_recorded_without_the_number_and_retried(sms_app, hl7_key,
                                                                    caplog):
    sms_app.extensions["sms_sender"].failures = [ConnectionError(f"could not reach {PHONE}")]
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler))
    t0 = utcnow()

    send(sms_app, t0)
    first = [m for m in texts(sms_app, filler) if m.kind == "confirmation"][0]
    send(sms_app, t0 + timedelta(seconds=30))

    assert (first.status, first.error_message) == ("scheduled", "ConnectionError")
    [confirmation] = [m for m in texts(sms_app, filler) if m.kind == "confirmation"]
    assert (confirmation.status, confirmation.attempts) == ("sent", 2)
    assert len(sent(sms_app)) == 1
    assert "5550123" not in caplog.text


def test_the_background_task_sends_what_is_due_and_forgets_finished_visits(sms_app, hl7_key):
    filler = new_filler()
    post(sms_app, hl7_key, siu(filler))
    post(sms_app, hl7_key, siu(new_filler(), trigger="S12", start="20300311093000"))
    post(sms_app, hl7_key, siu(filler, trigger="S26"))

    with sms_app.app_context():
        send_due_texts()
        phones = db.session.execute(sa.select(SmsRecipient)).scalars().all()

    assert len(sent(sms_app)) == 1  # the other visit's confirmation; the no-show got none
    assert len(phones) == 1  # the no-show's number is gone
