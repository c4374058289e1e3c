"""Each text once: leases renewed during a slow send, and texts left "sending" (a process
died mid-send, or Twilio did not answer in time) settled from the carrier's records
before anything is sent again. Against the Twilio stand-in over real HTTP, on SQLite and
PostgreSQL. Leases run on the wall clock, so these tests shorten them and wait for them.
"""
from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from extensions import db
from notifications import sending
from notifications.models import SmsMessage, SmsStatus
from notifications.senders import OutboxSender, Sent
from notifications.twilio_sender import TwilioSender
from tests.integration.test_sms_twilio import (  # noqa: F401  (twilio_app is a fixture)
    PATIENT,
    STATUS_URL,
    post_signed,
    reload,
    sender_for,
    sent_text,
    status_report,
    twilio_app,
)
from tests.twilio_fake import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER
from tests.twilio_fake import twilio_fake  # noqa: F401  (the fixture)
from visits.models import utcnow


def _in_background(app, work):
    """``work()`` in a thread and app context of its own, as another process would."""
    results: list = []

    def run() -> None:
        with app.app_context():
            results.append(work())
            db.session.remove()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, results


def _left_sending(message: SmsMessage, started_ago: timedelta = timedelta(seconds=30)) -> None:
    """As a process that died mid-send leaves a text: sending, its lease run out."""
    now = utcnow()
    db.session.execute(sa.update(SmsMessage).where(SmsMessage.id == message.id).values(
        status=SmsStatus.SENDING, send_ref="ab" * 16, send_started_at=now - started_ago,
        attempts=1, claim_id="cd" * 16, locked_until=now - timedelta(seconds=1)))
    db.session.commit()


def _settle(message: SmsMessage, seconds: float = 60.0) -> SmsMessage:
    """Run sending passes until the text is no longer sending (its lease must run out
    first), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        row = reload(message)
        if row.status != SmsStatus.SENDING:
            return row
        assert time.monotonic() < deadline, "still sending"
        wait = (row.locked_until - utcnow()).total_seconds() if row.locked_until else 0
        time.sleep(min(max(wait, 0.0) + 0.05, 1.0))  # until the lease ends, then look
        sending.send_due(utcnow())


def test_a_send_slower_than_the_lease_keeps_its_text_and_no_other_pass_takes_it(
        twilio_app, twilio_fake, monkeypatch):
    monkeypatch.setitem(twilio_app.config, "SMS_LEASE_SECONDS", 1.5)
    twilio_fake.delay = 4.0  # the carrier takes more than twice the lease
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)

    thread, results = _in_background(twilio_app, lambda: sending.send_due(utcnow()))
    assert twilio_fake.wait_for(lambda fake: len(fake.posts()) == 1, timeout=30)
    others, leases_left = [], []
    while thread.is_alive():  # meanwhile, another pass after another
        others.append(sending.send_due(utcnow()))
        row = reload(message)
        if row.status == SmsStatus.SENDING:
            leases_left.append((row.locked_until - utcnow()).total_seconds())
        thread.join(timeout=0.2)

    assert results == [1]
    assert others and set(others) == {0}
    assert leases_left and min(leases_left) > 0, leases_left
    assert len(twilio_fake.posts()) == 1
    row = reload(message)
    assert (row.status, row.attempts, row.locked_until, row.claim_id) == (
        SmsStatus.SENT, 1, None, None)


def test_the_text_is_recorded_sending_with_our_id_before_twilio_is_called(
        twilio_app, twilio_fake):
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    seen: list[tuple] = []
    sender = sending.get_sender()
    original = sender.send

    def send(**kwargs):
        with twilio_app.app_context():
            row = db.session.get(SmsMessage, message.id)
            seen.append((row.status, row.send_ref, row.send_started_at is not None))
            db.session.remove()
        return original(**kwargs)

    sender.send = send

    sending.send_due(utcnow())

    [(status, ref, started)] = seen
    assert (status, started) == (SmsStatus.SENDING, True)
    assert len(ref) == 32
    [accepted] = twilio_fake.messages
    assert accepted["status_callback"] == f"{STATUS_URL}?ref={ref}"
    assert reload(message).send_ref == ref


def test_a_text_twilio_took_without_answering_in_time_is_found_not_sent_again(
        twilio_app, twilio_fake, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setitem(twilio_app.config, "SMS_LEASE_SECONDS", 1.0)
    twilio_app.extensions["sms_sender"] = TwilioSender(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
        api_base_url=twilio_fake.url, timeout=0.5)
    twilio_fake.delay = 1.5  # Twilio creates it, but answers after we gave up
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)

    sending.send_due(utcnow())
    row = reload(message)
    in_doubt, started = (row.status, row.error_code), row.send_started_at
    assert twilio_fake.wait_for(lambda fake: len(fake.messages) == 1, timeout=30)
    settled = _settle(message)

    assert in_doubt == (SmsStatus.SENDING, "timeout")
    [accepted] = twilio_fake.messages
    assert (settled.status, settled.provider_message_id) == (SmsStatus.SENT, accepted["sid"])
    assert len(twilio_fake.posts()) == 1
    [lookup, *_] = [r for r in twilio_fake.requests if r["method"] == "GET"]
    assert lookup["query"]["To"] == PATIENT
    assert lookup["query"]["DateSent>"] == (started - timedelta(minutes=5)).strftime("%Y-%m-%d")
    logged = "\n".join(str(vars(record)) for record in caplog.records)
    assert "in doubt" in logged
    assert PATIENT.lstrip("+") not in logged and "Your visit is booked" not in logged


def test_a_text_left_sending_that_twilio_never_got_is_sent_once_more(twilio_app, twilio_fake):
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    _left_sending(message)

    sending.send_due(utcnow())

    row = reload(message)
    [accepted] = twilio_fake.messages
    assert (row.status, row.provider_message_id, row.attempts) == (
        SmsStatus.SENT, accepted["sid"], 2)
    assert twilio_fake.requests[0]["method"] == "GET"  # looked up first


def test_a_text_left_sending_that_twilio_has_is_recorded_not_sent_again(
        twilio_app, twilio_fake):
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    # What the dead process had handed over, as Twilio keeps it.
    sid = sender_for(twilio_fake).send(to=PATIENT, body="Your visit is booked.",
                                       from_number=None, status_callback=None)
    _left_sending(message)

    sending.send_due(utcnow())

    row = reload(message)
    assert (row.status, row.provider_message_id, row.attempts) == (
        SmsStatus.SENT, sid.provider_message_id, 1)
    assert len(twilio_fake.posts()) == 1


def test_with_the_outbox_sender_a_text_left_sending_is_stored_again(twilio_app):
    twilio_app.extensions["sms_sender"] = OutboxSender()
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    _left_sending(message)

    sending.send_due(utcnow())

    row = reload(message)
    assert (row.status, row.attempts) == (SmsStatus.DELIVERED, 2)
    assert row.provider_message_id.startswith("outbox-")


def test_a_sender_that_cannot_look_texts_up_does_not_send_one_left_sending(twilio_app):
    class Blind:
        """A carrier client with no way to list what it sent."""

        name = "blind"

        def __init__(self) -> None:
            self.sent: list[dict] = []

        def send(self, **kwargs) -> Sent:
            self.sent.append(kwargs)
            return Sent("blind-1")

    blind = twilio_app.extensions["sms_sender"] = Blind()
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    _left_sending(message)

    sending.send_due(utcnow())

    row = reload(message)
    assert (row.status, row.error_code) == (SmsStatus.FAILED, "interrupted")
    assert "may have gone out" in row.error_message
    assert blind.sent == []


def test_a_delivery_report_naming_our_id_settles_a_text_still_sending(
        twilio_app, twilio_fake, monkeypatch):
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    _left_sending(message)
    sid = "SM" + "12" * 16
    client = twilio_app.test_client()

    stranger = post_signed(client, f"{STATUS_URL}?ref={'ef' * 16}", status_report(sid, "sent"))
    ours = post_signed(client, f"{STATUS_URL}?ref={'ab' * 16}", status_report(sid, "delivered"))
    sending.send_due(utcnow())

    assert (stranger.status_code, ours.status_code) == (200, 200)
    row = reload(message)
    assert (row.status, row.provider_message_id) == (SmsStatus.DELIVERED, sid)
    assert twilio_fake.requests == []  # nothing looked up, nothing sent again


def test_find_sent_asks_twilios_list_messages_by_number_and_day(twilio_fake):
    sender = sender_for(twilio_fake)
    since = utcnow() - timedelta(seconds=5)
    sent = sender.send(to=PATIENT, body="Your visit is booked.", from_number=None,
                       status_callback=None)
    twilio_fake.send_at_once = False  # the next one stays queued: no DateSent yet
    queued = sender.send(to=PATIENT, body="Your visit moved.", from_number=None,
                         status_callback=None)

    found = sender.find_sent(to=PATIENT, body="Your visit is booked.", from_number=None,
                             since=since)
    found_queued = sender.find_sent(to=PATIENT, body="Your visit moved.", from_number=None,
                                    since=since)
    other_body = sender.find_sent(to=PATIENT, body="Something else", from_number=None,
                                  since=since)
    other_number = sender.find_sent(to="+16085550199", body="Your visit is booked.",
                                    from_number=None, since=since)
    later = sender.find_sent(to=PATIENT, body="Your visit is booked.", from_number=None,
                             since=since + timedelta(hours=1))

    assert found.provider_message_id == sent.provider_message_id
    assert found_queued.provider_message_id == queued.provider_message_id
    assert (other_body, other_number, later) == (None, None, None)
    lookup = next(r for r in twilio_fake.requests if r["method"] == "GET")
    assert lookup["path"].startswith(f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json?")
    assert lookup["query"]["To"] == PATIENT
    assert lookup["query"]["DateSent>"] == (since - timedelta(minutes=5)).strftime("%Y-%m-%d")


@pytest.mark.parametrize("status", [500, 429])
def test_a_look_up_twilio_refuses_leaves_the_text_in_doubt_for_later(twilio_app, twilio_fake,
                                                                   status):
    message = sent_text(status=SmsStatus.SCHEDULED, sid=None)
    _left_sending(message)
    twilio_fake.fail_next(status=status)

    sending.send_due(utcnow())

    row = reload(message)
    assert row.status == SmsStatus.SENDING
    assert row.locked_until > utcnow() and row.claim_id is None
    assert "not yet known" in row.error_message
    assert twilio_fake.posts() == []
