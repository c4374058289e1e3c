"""Send the texts that are due, once each, from any number of processes.

Each text is claimed when its own send starts, never ahead in a batch: one statement
leases the row (``locked_until``, ``SMS_LEASE_SECONDS`` of wall-clock time) under a claim
id of its own (``claim_id``); PostgreSQL picks it with ``FOR UPDATE SKIP LOCKED``, SQLite
has one writer at a time. While the carrier answers, a thread renews the lease every
third of it, so a slow carrier never lets the lease of a live sender run out. A result
is recorded only while the row still carries the claim.

Before the carrier is called the row is recorded ``sending`` with our id for this
hand-over (``send_ref``, in Twilio's StatusCallback URL) and its start time. A text found
``sending`` with its lease run out is in doubt (its process died mid-send, or the carrier
did not answer in time): before anything else it is looked up in the carrier's records
(``Sender.find_sent``). Found: it is recorded as sent. Not found: it is sent again. A
sender that cannot look texts up does not send it again (docs/sms.md: the policy).

Everything that may have changed since the text was planned is checked again at send
time: a STOP, a cancelled or already-started visit, quiet hours, a deleted phone.
Retryable failures back off (30 s, 60 s, 120 s, ...) until ``SMS_MAX_ATTEMPTS``.
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import phonenumbers
import sqlalchemy as sa
from flask import current_app, has_request_context
from flask_babel import force_locale
from flask_babel import gettext as _

import at_rest
from ehr.models import EhrEndpoint
from extensions import db
from notifications import endpoint_settings, optout, retention, texts
from notifications.models import (
    BODY_PURPOSE,
    PHONE_PURPOSE,
    SmsKind,
    SmsMessage,
    SmsRecipient,
    SmsStatus,
)
from notifications.senders import SendFailed, Sent, get_sender
from ops.background import periodic
from visits.models import AppointmentStatus, Participant, utcnow

log = logging.getLogger(__name__)

BACKOFF_BASE = timedelta(seconds=30)
# A claim is recorded against rows in these states; anything else means someone else
# (a delivery report, a cancellation) settled the row meanwhile.
_OPEN = (SmsStatus.SCHEDULED, SmsStatus.SENDING)


class InvalidPhone(ValueError):
    """A typed number that cannot be texted; the message says so in plain words."""


@dataclass(frozen=True)
class Outcome:
    """How an immediate send went: ``texted`` or the reason it was not (for the UI)."""

    message_id: int
    status: str
    reason: str | None = None

    @property
    def texted(self) -> bool:
        return self.status in (SmsStatus.SENT, SmsStatus.DELIVERED)


@dataclass(frozen=True)
class _Claim:
    """A row held by this process under ``claim_id`` (see the module docstring)."""

    message_id: int
    claim_id: str


@dataclass(frozen=True)
class _Send:
    """Everything still holds: what to hand to the carrier."""

    phone: str
    body: str
    from_number: str | None
    attempts: int  # counting this one


def normalise_phone(text: str, region: str | None) -> str:
    """A typed number in E.164; raises InvalidPhone. ``region`` is for national forms."""
    region = (region or current_app.config.get("SMS_DEFAULT_REGION") or "US").upper()
    try:
        parsed = phonenumbers.parse((text or "").strip(), region)
    except phonenumbers.NumberParseException:
        parsed = None
    # The message is in the asker's language on a page; English from a CLI or a test.
    with nullcontext() if has_request_context() else force_locale("en"):
        if parsed is None:
            raise InvalidPhone(_("That is not a phone number."))
        if not phonenumbers.is_valid_number(parsed):
            raise InvalidPhone(_("That phone number is not valid; check the digits and "
                                 "area code."))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# --- the sending pass ---------------------------------------------------------------------

def send_due(now: datetime, *, limit: int = 50) -> int:
    """Settle texts left in doubt, then claim and send due texts one at a time, up to
    ``limit`` in all; returns how many were handled (sent, postponed, suppressed,
    cancelled or failed). ``now`` decides what is due; leases run on the wall clock.
    Safe in every process at once."""
    handled = 0
    for pick in (_in_doubt, _due):
        while handled < limit:
            claim = _claim_next(pick, now)
            if claim is None:
                break
            _deliver(claim, now)
            handled += 1
    return handled


def _lease() -> timedelta:
    return timedelta(seconds=float(current_app.config["SMS_LEASE_SECONDS"]))


def _unheld(clock: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(SmsMessage.locked_until.is_(None), SmsMessage.locked_until < clock)


def _in_doubt(now: datetime, clock: datetime) -> tuple[sa.ColumnElement[bool], tuple]:
    """Texts handed to the carrier whose sender stopped renewing its lease."""
    return (sa.and_(SmsMessage.status == SmsStatus.SENDING, _unheld(clock)),
            (SmsMessage.send_started_at, SmsMessage.id))


def _due(now: datetime, clock: datetime) -> tuple[sa.ColumnElement[bool], tuple]:
    due_at = sa.func.coalesce(SmsMessage.next_attempt_at, SmsMessage.scheduled_for)
    return (sa.and_(SmsMessage.status == SmsStatus.SCHEDULED, due_at <= now, _unheld(clock)),
            (due_at, SmsMessage.id))


def _claim_next(pick: Callable[[datetime, datetime], tuple[sa.ColumnElement[bool], tuple]],
                now: datetime) -> _Claim | None:
    """Lease the first row ``pick`` selects to a new claim of this process; commits.

    One UPDATE whose WHERE picks the row and repeats the test: on PostgreSQL the pick
    skips rows another claimer has locked and the test is re-checked after the lock;
    SQLite runs one writer at a time. Of two processes racing, one gets each row."""
    clock = utcnow()
    where, order = pick(now, clock)
    # correlate(None): the pick reads the table on its own, not the UPDATE's row.
    chosen = (sa.select(SmsMessage.id).where(where).order_by(*order).limit(1)
              .with_for_update(skip_locked=True).correlate(None).scalar_subquery())
    claim_id = secrets.token_hex(16)
    row_id = db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.id == chosen, where)
        .values(locked_until=clock + _lease(), claim_id=claim_id)
        .returning(SmsMessage.id).execution_options(synchronize_session=False)
    ).scalar_one_or_none()
    db.session.commit()
    return _Claim(row_id, claim_id) if row_id is not None else None


def _deliver(claim: _Claim, now: datetime, to: str | None = None,
             endpoint: EhrEndpoint | None = None) -> str:
    """Settle, re-check, send and record one claimed row; returns its new status."""
    message = db.session.get(SmsMessage, claim.message_id, populate_existing=True)
    if message is None or message.claim_id != claim.claim_id:
        status = message.status if message is not None else SmsStatus.CANCELLED
        db.session.rollback()
        return status
    kind = message.kind
    step = _reconcile(claim, message, now, to, endpoint) \
        if message.status == SmsStatus.SENDING else None
    if step is None:
        step = _decide(message, now, to, endpoint)
    db.session.rollback()  # end the read; nothing of ours is pending
    if isinstance(step, _Send):
        values = _send(claim, step, now, immediate=to is not None)
        if values is None:
            return SmsStatus.SENDING  # the claim was lost before the carrier was called
    else:
        values = step
    return _record(claim, kind, values, now)


def _reconcile(claim: _Claim, message: SmsMessage, now: datetime, to: str | None,
               endpoint: EhrEndpoint | None) -> dict[str, Any] | None:
    """A text left ``sending``: the column values once the carrier's records settle it,
    or None when the carrier does not have it and it should be sent again."""
    sender = get_sender()
    find = getattr(sender, "find_sent", None)
    extra = {"sms_id": message.id, "sender": sender.name}
    try:
        phone = to or _phone_of(message.participant)
        body = at_rest.decrypt(message.body_encrypted, BODY_PURPOSE) \
            if message.body_encrypted is not None else None
    except at_rest.InvalidToken:
        return _final(SmsStatus.FAILED, "cannot be decrypted (was SECRET_KEY changed?)")
    if find is None or phone is None:
        log.warning("sms in doubt cannot be looked up; not sent again", extra=extra)
        why = "this sender cannot tell whether it went out" if find is None \
            else "the number is no longer held to look it up"
        return {**_final(SmsStatus.FAILED, f"sending was interrupted and {why}; "
                                           "not sent again, as it may have gone out"),
                "error_code": "interrupted"}
    since = message.send_started_at or utcnow() - _lease()
    from_number = _settings(message, endpoint).sender_number or \
        current_app.config.get("TWILIO_FROM_NUMBER")
    try:
        with _renewing(claim):
            found = find(to=phone, body=body, from_number=from_number, since=since)
    except Exception as exc:  # the edge to the carrier: ask again once the lease is over
        failure = exc if isinstance(exc, SendFailed) else SendFailed(type(exc).__name__)
        log.warning("sms in doubt: the carrier could not be asked", extra={
            **extra, "error": failure.code or type(exc).__name__})
        return {"status": SmsStatus.SENDING, "locked_until": utcnow() + _lease(),
                "error_code": failure.code,
                "error_message": f"not yet known whether it went out: {failure.reason}"[:300]}
    if found is not None:
        log.info("sms in doubt was sent; recorded, not sent again", extra={
            **extra, "provider_message_id": found.provider_message_id})
        return {"status": found.status if found.status in (SmsStatus.SENT, SmsStatus.DELIVERED)
                else SmsStatus.SENT, "provider_message_id": found.provider_message_id[:64],
                "sent_at": now, "error_code": None, "error_message": None,
                "next_attempt_at": None}
    if message.attempts >= int(current_app.config["SMS_MAX_ATTEMPTS"]):
        return _final(SmsStatus.FAILED, "sending was interrupted too often")
    log.info("sms in doubt is not at the carrier; sending it again", extra=extra)
    return None


def _decide(message: SmsMessage, now: datetime, to: str | None,
            endpoint: EhrEndpoint | None) -> dict[str, Any] | _Send:
    """The column values if the text is not to be sent now, else what to send."""
    appointment = message.appointment
    if appointment is not None and message.kind != SmsKind.CANCELLATION:
        if appointment.status in (AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW):
            return _final(SmsStatus.CANCELLED, f"appointment {appointment.status}")
        if appointment.ended_at is not None:
            return _final(SmsStatus.CANCELLED, "visit over")
        # A guest may be invited while a visit runs past its booked end; other texts not.
        if appointment.end_at <= now and message.kind != SmsKind.INVITATION:
            return _final(SmsStatus.CANCELLED, "visit over")
        if message.kind == SmsKind.REMINDER and appointment.start_at <= now:
            return _final(SmsStatus.CANCELLED, "visit already started")
    settings = _settings(message, endpoint)
    try:
        phone = to or _phone_of(message.participant)
        body = at_rest.decrypt(message.body_encrypted, BODY_PURPOSE) \
            if message.body_encrypted is not None else None
    except at_rest.InvalidToken:
        return _final(SmsStatus.FAILED, "cannot be decrypted (was SECRET_KEY changed?)")
    if phone is None:
        return _final(SmsStatus.SUPPRESSED, "no phone number (deleted or never given)")
    if body is None:
        return _final(SmsStatus.CANCELLED, "text no longer held")
    if optout.is_opted_out(phone):
        return _final(SmsStatus.SUPPRESSED, "opted out")
    if message.kind == SmsKind.REMINDER and settings.quiet_hours and appointment is not None:
        quiet_end = _quiet_until(now, appointment.timezone, *settings.quiet_hours)
        if quiet_end is not None:
            if quiet_end < appointment.start_at:
                return {"status": SmsStatus.SCHEDULED, "next_attempt_at": quiet_end}
            return _final(SmsStatus.SUPPRESSED, "quiet hours")
    return _Send(phone, body, settings.sender_number or
                 current_app.config.get("TWILIO_FROM_NUMBER"), message.attempts + 1)


def _settings(message: SmsMessage,
              endpoint: EhrEndpoint | None) -> endpoint_settings.SmsSettings:
    appointment = message.appointment
    endpoint = endpoint or (appointment.endpoint if appointment is not None else None)
    return endpoint_settings.for_endpoint(endpoint) if endpoint is not None \
        else endpoint_settings.SmsSettings()


def _send(claim: _Claim, plan: _Send, now: datetime, *, immediate: bool) -> dict[str, Any] | None:
    """Record ``sending`` under our claim, then hand the text to the carrier while the
    lease is renewed; returns the column values after it, or None if the claim was lost
    before anything was sent."""
    ref = secrets.token_hex(16)
    marked = db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.id == claim.message_id,
                                    SmsMessage.claim_id == claim.claim_id,
                                    SmsMessage.status.in_(_OPEN))
        .values(status=SmsStatus.SENDING, send_ref=ref, send_started_at=utcnow(),
                attempts=plan.attempts).execution_options(synchronize_session=False))
    db.session.commit()
    if marked.rowcount != 1:
        log.warning("sms claim lost before sending; not sent",
                    extra={"sms_id": claim.message_id})
        return None
    sender = get_sender()
    config = current_app.config
    callback = f"{config['PUBLIC_BASE_URL']}/sms/twilio/status?ref={ref}" \
        if sender.name == "twilio" else None
    try:
        with _renewing(claim):
            sent: Sent = sender.send(to=plan.phone, body=plan.body,
                                     from_number=plan.from_number, status_callback=callback)
    except Exception as exc:  # the edge to the carrier: whatever it raises, record and retry
        failure = exc if isinstance(exc, SendFailed) else SendFailed(type(exc).__name__)
        if not isinstance(exc, SendFailed):
            # The type only: a client library's message may quote the number.
            log.error("sms sender raised", extra={"sms_id": claim.message_id,
                                                  "error": type(exc).__name__})
        values: dict[str, Any] = {"error_code": failure.code,
                                  "error_message": (failure.reason or "send failed")[:300]}
        if failure.in_doubt and not immediate:
            # The carrier may have it: look it up once the lease is over, not resend now.
            values.update(status=SmsStatus.SENDING, locked_until=utcnow() + _lease())
        elif failure.retryable and not immediate \
                and plan.attempts < int(config["SMS_MAX_ATTEMPTS"]):
            values.update(status=SmsStatus.SCHEDULED,
                          next_attempt_at=now + BACKOFF_BASE * 2 ** (plan.attempts - 1))
        else:
            values.update(status=SmsStatus.FAILED, next_attempt_at=None)
        return values
    return {"status": sent.status if sent.status in (SmsStatus.SENT, SmsStatus.DELIVERED)
            else SmsStatus.SENT, "provider_message_id": sent.provider_message_id[:64],
            "sent_at": now, "error_code": None, "error_message": None, "next_attempt_at": None}


@contextmanager
def _renewing(claim: _Claim) -> Iterator[None]:
    """Renew the claim's lease every third of it until the block ends, from a thread of
    its own (a greenlet when gevent patched the process), on its own connection."""
    engine, lease = db.engine, _lease()
    stop = threading.Event()
    renew = (sa.update(SmsMessage)
             .where(SmsMessage.id == claim.message_id, SmsMessage.claim_id == claim.claim_id)
             .execution_options(synchronize_session=False))

    def run() -> None:
        while not stop.wait(lease.total_seconds() / 3):
            try:
                with engine.begin() as connection:
                    held = connection.execute(
                        renew.values(locked_until=utcnow() + lease)).rowcount == 1
            except Exception:  # a failed renewal is tried again; the lease has slack
                log.exception("sms lease not renewed", extra={"sms_id": claim.message_id})
                continue
            if not held:
                log.warning("sms claim lost while sending", extra={"sms_id": claim.message_id})
                return

    thread = threading.Thread(target=run, name=f"sms-lease-{claim.message_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=lease.total_seconds())


def _record(claim: _Claim, kind: str, values: dict[str, Any], now: datetime) -> str:
    """Store the outcome if the row still carries our claim and nobody settled it
    meanwhile (a delivery report naming our ``send_ref``, a cancellation); commits."""
    values = {"locked_until": None, **values, "claim_id": None, "status_updated_at": now}
    result = db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.id == claim.message_id,
                                    SmsMessage.claim_id == claim.claim_id,
                                    SmsMessage.status.in_(_OPEN))
        .values(**values).execution_options(synchronize_session=False))
    db.session.commit()
    status = str(values["status"])
    extra = {"sms_id": claim.message_id, "kind": kind, "status": status,
             "reason": values.get("error_message")}
    if result.rowcount == 1:
        log.info("sms handled", extra=extra)
        return status
    released = db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.id == claim.message_id,
                                    SmsMessage.claim_id == claim.claim_id)
        .values(locked_until=None, claim_id=None).execution_options(synchronize_session=False))
    db.session.commit()
    if released.rowcount == 1:
        log.info("sms settled meanwhile (delivery report or cancellation)", extra=extra)
    else:
        log.warning("sms claim lost before the result was recorded", extra=extra)
    return status


def _final(status: str, reason: str) -> dict[str, Any]:
    return {"status": status, "error_message": reason, "next_attempt_at": None}


def _phone_of(participant: Participant | None) -> str | None:
    if participant is None:
        return None
    recipient = db.session.execute(db.select(SmsRecipient).filter_by(
        participant_id=participant.id)).scalar_one_or_none()
    if recipient is None or not recipient.phone_encrypted:
        return None
    return at_rest.decrypt(recipient.phone_encrypted, PHONE_PURPOSE)


def _quiet_until(now: datetime, zone_name: str, start: time, end: time) -> datetime | None:
    """When quiet hours end (UTC) if ``now`` falls in them at the clinic, else None.
    A window may span midnight (21:00–08:00) or not (12:00–13:00)."""
    zone = ZoneInfo(zone_name)
    local = now.astimezone(zone)
    clock = local.time().replace(tzinfo=None)
    if start < end:
        inside = start <= clock < end
    else:
        inside = clock >= start or clock < end
    if not inside:
        return None
    day = local.date() if clock < end else local.date() + timedelta(days=1)
    return datetime.combine(day, end, tzinfo=zone).astimezone(now.tzinfo)


@periodic("SMS_POLL_SECONDS", name="notifications.sms")
def send_due_texts() -> None:
    """Background loop body: send what is due, then forget phones of finished visits."""
    now = utcnow()
    send_due(now)
    retention.purge_finished(now)


# --- immediate texts: invitations and an admin's test ------------------------------------

def send_now(message_id: int, now: datetime, *, to: str | None = None,
             endpoint: EhrEndpoint | None = None, claim_id: str | None = None) -> Outcome:
    """Send one scheduled row at once: under ``claim_id`` when its creator holds it
    (``_immediate``), else if nobody holds it. ``to`` is a number given for this send only
    and never stored: a failure that could be retried is then final, since we cannot."""
    clock = utcnow()
    held = SmsMessage.claim_id == claim_id if claim_id else _unheld(clock)
    claim = _Claim(message_id, secrets.token_hex(16))
    result = db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.id == message_id,
                                    SmsMessage.status == SmsStatus.SCHEDULED, held)
        .values(locked_until=clock + _lease(), claim_id=claim.claim_id)
        .execution_options(synchronize_session=False))
    db.session.commit()
    if result.rowcount != 1:
        row = db.session.get(SmsMessage, message_id, populate_existing=True)
        return Outcome(message_id, row.status if row else SmsStatus.CANCELLED,
                       row.error_message if row else "no such text")
    status = _deliver(claim, now, to=to, endpoint=endpoint)
    row = db.session.get(SmsMessage, message_id, populate_existing=True)
    return Outcome(message_id, status, row.error_message if row else None)


def _immediate(kind: str, language: str, body: str, now: datetime,
               appointment_id: int | None = None,
               participant_id: int | None = None) -> SmsMessage:
    """A row for a text sent at once. It is created already claimed, so a sending pass
    in another process cannot pick it up (it has no stored number to send to) unless
    this process dies, in which case it is suppressed for want of a number."""
    row = SmsMessage(kind=kind, language=language, scheduled_for=now, attempts=0,
                     status=SmsStatus.SCHEDULED, appointment_id=appointment_id,
                     participant_id=participant_id, created_at=now,
                     body_encrypted=at_rest.encrypt(body, BODY_PURPOSE),
                     locked_until=utcnow() + _lease(), claim_id=secrets.token_hex(16))
    db.session.add(row)
    db.session.commit()
    return row


def send_test_message(endpoint: EhrEndpoint, phone_text: str, language: str | None,
                      now: datetime) -> SmsMessage:
    """An admin's self-test: text ``phone_text`` (national numbers read in the endpoint's
    region) a short message now; returns the row with its outcome. InvalidPhone for a
    number that cannot be texted."""
    phone = normalise_phone(phone_text, endpoint.default_phone_region)
    locale = texts.locale_for(language)
    body = texts.render(SmsKind.TEST, locale, None, None, clinic=endpoint.name)
    row = _immediate(SmsKind.TEST, locale, body, now)
    send_now(row.id, now, to=phone, endpoint=endpoint, claim_id=row.claim_id)
    return db.session.get(SmsMessage, row.id, populate_existing=True)


def send_invitation(participant: Participant, join_url: str, phone_e164: str,
                    now: datetime) -> Outcome:
    """Text a guest or interpreter their join link now; the number is used for this send
    only. The text is in the patient's language when known (family members and
    interpreters of the visit are the likeliest to read it)."""
    appointment = participant.appointment
    language = next((p.language for p in appointment.participants
                     if p.role == "patient" and p.language), None)
    locale = texts.locale_for(language)
    body = texts.render(SmsKind.INVITATION, locale, appointment, join_url)
    row = _immediate(SmsKind.INVITATION, locale, body, now, appointment_id=appointment.id,
                     participant_id=participant.id)
    return send_now(row.id, now, to=phone_e164, endpoint=appointment.endpoint,
                    claim_id=row.claim_id)
