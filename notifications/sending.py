"""Send the texts that are due, once each, from any number of processes.

A due row is claimed first: on PostgreSQL ``SELECT ... FOR UPDATE SKIP LOCKED`` then a
lease in ``locked_until``; on SQLite (one writer at a time) a conditional UPDATE that
repeats the "due and unclaimed" test. Only the claimant sends, and records the outcome
only while its lease holds, so a text goes out once even with several processes.

Everything that may have changed since the text was planned is checked again at send
time: a STOP, a cancelled or already-started visit, quiet hours, a deleted phone.
Retryable failures back off (30 s, 60 s, 120 s, ...) until ``SMS_MAX_ATTEMPTS``.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext
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

# A claim lasts this long: well over one send (Twilio's API answers in about a second).
LEASE = timedelta(seconds=60)
BACKOFF_BASE = timedelta(seconds=30)


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
    """Claim and send up to ``limit`` due texts; returns how many were handled (sent,
    postponed, suppressed, cancelled or failed). Safe in every process at once."""
    handled = 0
    while handled < limit:
        claimed = _claim(now, min(10, limit - handled))
        if not claimed:
            break
        for message_id, lease in claimed:
            _deliver(message_id, lease, now)
            handled += 1
    return handled


def _due(now: datetime) -> sa.ColumnElement[bool]:
    return sa.and_(
        SmsMessage.status == SmsStatus.SCHEDULED,
        sa.func.coalesce(SmsMessage.next_attempt_at, SmsMessage.scheduled_for) <= now,
        sa.or_(SmsMessage.locked_until.is_(None), SmsMessage.locked_until < now))


def _claim(now: datetime, limit: int) -> list[tuple[int, datetime]]:
    """Lease up to ``limit`` due rows to this process; commits. Returns (id, lease)."""
    lease = now + LEASE
    due = _due(now)
    order = (sa.func.coalesce(SmsMessage.next_attempt_at, SmsMessage.scheduled_for),
             SmsMessage.id)
    if db.session.get_bind().dialect.name == "postgresql":
        ids = db.session.execute(
            sa.select(SmsMessage.id).where(due).order_by(*order).limit(limit)
            .with_for_update(skip_locked=True)).scalars().all()
        if ids:
            db.session.execute(sa.update(SmsMessage).where(SmsMessage.id.in_(ids))
                               .values(locked_until=lease)
                               .execution_options(synchronize_session=False))
        db.session.commit()
        return [(row_id, lease) for row_id in ids]
    candidates = db.session.execute(
        sa.select(SmsMessage.id).where(due).order_by(*order).limit(limit)).scalars().all()
    claimed = []
    for row_id in candidates:
        # The WHERE repeats the test: of two processes racing, one sees rowcount 0.
        result = db.session.execute(
            sa.update(SmsMessage).where(SmsMessage.id == row_id, due)
            .values(locked_until=lease).execution_options(synchronize_session=False))
        if result.rowcount == 1:
            claimed.append((row_id, lease))
    db.session.commit()
    return claimed


def _deliver(message_id: int, lease: datetime, now: datetime, to: str | None = None,
             endpoint: EhrEndpoint | None = None) -> str:
    """Re-check, send and record one claimed row; returns its new status."""
    message = db.session.get(SmsMessage, message_id, populate_existing=True)
    if message is None:
        return SmsStatus.CANCELLED
    values = _decide(message, now, to, endpoint)
    kind, attempts = message.kind, message.attempts
    db.session.rollback()  # end the read; nothing of ours is pending
    values["locked_until"] = None
    values["status_updated_at"] = now
    result = db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.id == message_id,
                                    SmsMessage.locked_until == lease)
        .values(**values).execution_options(synchronize_session=False))
    db.session.commit()
    status = str(values.get("status", SmsStatus.SCHEDULED))
    extra = {"sms_id": message_id, "kind": kind, "status": status,
             "attempts": values.get("attempts", attempts),
             "reason": values.get("error_message")}
    if result.rowcount != 1:
        log.warning("sms lease lost before the result was recorded", extra=extra)
    else:
        log.info("sms handled", extra=extra)
    return status


def _decide(message: SmsMessage, now: datetime, to: str | None,
            endpoint: EhrEndpoint | None) -> dict[str, Any]:
    """The column values after this attempt; sends when everything still holds."""
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
    endpoint = endpoint or (appointment.endpoint if appointment is not None else None)
    settings = endpoint_settings.for_endpoint(endpoint) if endpoint is not None \
        else endpoint_settings.SmsSettings()
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
                return {"next_attempt_at": quiet_end}
            return _final(SmsStatus.SUPPRESSED, "quiet hours")
    sender = get_sender()
    config = current_app.config
    callback = f"{config['PUBLIC_BASE_URL']}/sms/twilio/status" if sender.name == "twilio" \
        else None
    attempts = message.attempts + 1
    try:
        sent: Sent = sender.send(to=phone, body=body,
                                 from_number=settings.sender_number or
                                 config.get("TWILIO_FROM_NUMBER"),
                                 status_callback=callback)
    except Exception as exc:  # the edge to the carrier: whatever it raises, record and retry
        failure = exc if isinstance(exc, SendFailed) else SendFailed(type(exc).__name__)
        if not isinstance(exc, SendFailed):
            # The type only: a client library's message may quote the number.
            log.error("sms sender raised", extra={"sms_id": message.id,
                                                  "error": type(exc).__name__})
        values: dict[str, Any] = {"attempts": attempts, "error_code": failure.code,
                                  "error_message": (failure.reason or "send failed")[:300]}
        if failure.retryable and to is None and attempts < int(config["SMS_MAX_ATTEMPTS"]):
            values["next_attempt_at"] = now + BACKOFF_BASE * 2 ** (attempts - 1)
        else:
            values.update(status=SmsStatus.FAILED, next_attempt_at=None)
        return values
    return {"attempts": attempts, "status": sent.status if sent.status in
            (SmsStatus.SENT, SmsStatus.DELIVERED) else SmsStatus.SENT,
            "provider_message_id": sent.provider_message_id[:64], "sent_at": now,
            "error_code": None, "error_message": None, "next_attempt_at": None}


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
             endpoint: EhrEndpoint | None = None) -> Outcome:
    """Send one row at once (it must be scheduled and either unclaimed or claimed by its
    creator with ``claim_for_now``). ``to`` is a number given for this send only and
    never stored: a failure that could be retried is then final, since we cannot."""
    lease = now + LEASE
    result = db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.id == message_id,
                                    SmsMessage.status == SmsStatus.SCHEDULED)
        .values(locked_until=lease).execution_options(synchronize_session=False))
    db.session.commit()
    if result.rowcount != 1:
        row = db.session.get(SmsMessage, message_id, populate_existing=True)
        return Outcome(message_id, row.status if row else SmsStatus.CANCELLED,
                       row.error_message if row else "no such text")
    status = _deliver(message_id, lease, now, to=to, endpoint=endpoint)
    row = db.session.get(SmsMessage, message_id, populate_existing=True)
    return Outcome(message_id, status, row.error_message if row else None)


def _immediate(kind: str, language: str, body: str, now: datetime,
               appointment_id: int | None = None,
               participant_id: int | None = None) -> SmsMessage:
    """A row for a text sent at once. It is created already leased, so a sending pass in
    another process cannot pick it up (it has no stored number to send to) unless this
    process dies, in which case it is suppressed for want of a number."""
    row = SmsMessage(kind=kind, language=language, scheduled_for=now, attempts=0,
                     status=SmsStatus.SCHEDULED, appointment_id=appointment_id,
                     participant_id=participant_id, created_at=now,
                     body_encrypted=at_rest.encrypt(body, BODY_PURPOSE),
                     locked_until=now + LEASE)
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
    send_now(row.id, now, to=phone, endpoint=endpoint)
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
    return send_now(row.id, now, to=phone_e164, endpoint=appointment.endpoint)
