"""What to text when the EHR changes an appointment: plan the rows, render them, never send.

The HL7 intake calls ``appointment_changed`` inside the savepoint that applies a message,
so the texts commit (or roll back) with the change they announce, and a duplicate
message, which the intake never applies twice, never plans a text twice. Sending is
``notifications.sending``'s job; it re-checks everything at send time.

Each row's body is rendered now, with a fresh join link, and stored encrypted: the text
a patient gets is the one planned, and the link is never kept in clear.
"""
from __future__ import annotations

import enum
from datetime import datetime, timedelta

from flask import current_app

import at_rest
from extensions import db
from notifications import endpoint_settings, texts
from notifications.models import BODY_PURPOSE, SmsKind, SmsMessage, SmsRecipient, SmsStatus
from visits.links import add_join_link, extend_to_schedule
from visits.models import Appointment, Participant, ParticipantRole


class Change(enum.StrEnum):
    """What an EHR message did to an appointment, as far as texts care."""

    CREATED = "created"  # booked (or booked again after a cancel)
    RESCHEDULED = "rescheduled"  # the start moved
    UPDATED = "updated"  # anything else (provider, department, phone): no text, unless
    # the patient's number arrives only now
    CANCELLED = "cancelled"
    NOSHOW = "noshow"


_ANNOUNCE = {Change.CREATED: SmsKind.CONFIRMATION, Change.RESCHEDULED: SmsKind.RESCHEDULE,
             Change.CANCELLED: SmsKind.CANCELLATION}
_SETTING = {SmsKind.CONFIRMATION: "send_confirmation", SmsKind.RESCHEDULE: "send_reschedule",
            SmsKind.CANCELLATION: "send_cancellation"}
LANDLINE = "landline"
# Nobody books a video visit further ahead; a later date is a data error (year 9999),
# and its link expiry or local time could not even be computed.
HORIZON = timedelta(days=5 * 366)


def appointment_changed(appointment: Appointment, change: str, now: datetime) -> list[SmsMessage]:
    """Plan the patient's texts for ``change``; returns the rows added (no commit).

    Created: a confirmation and reminders. Updated: nothing, unless the patient's number
    came only now (then as created). Rescheduled: pending texts are cancelled (their
    time is wrong), then a reschedule text and new reminders. Cancelled: pending texts are
    cancelled and a cancellation is sent. No-show: pending texts are cancelled, nothing
    sent. Nothing is ever planned for a visit that is already over."""
    change = Change(change)
    if change is Change.RESCHEDULED:
        extend_to_schedule(appointment)
    if change in (Change.RESCHEDULED, Change.CANCELLED, Change.NOSHOW):
        cancel_pending(appointment, "superseded" if change is Change.RESCHEDULED
                       else f"appointment {change.value}")
    settings = endpoint_settings.for_endpoint(appointment.endpoint)
    if not settings.enabled or change is Change.NOSHOW or appointment.end_at <= now \
            or appointment.start_at > now + HORIZON:
        return []
    planned: list[SmsMessage] = []
    for patient in _patients(appointment):
        recipient = db.session.execute(db.select(SmsRecipient).filter_by(
            participant_id=patient.id)).scalar_one_or_none()
        if recipient is None:
            continue
        if change is Change.UPDATED:
            if _has_texts(appointment, patient):
                continue
            # The number arrived only now (the booking had none): plan as for a booking.
            kind = SmsKind.CONFIRMATION
        else:
            kind = _ANNOUNCE[change]
        if getattr(settings, _SETTING[kind]):
            planned.append(_plan(appointment, patient, recipient, kind, now, now))
        if change is Change.CANCELLED:
            continue
        for offset in settings.reminder_offsets_minutes:
            due = appointment.start_at - timedelta(minutes=offset)
            if due >= now:  # a reminder whose time has passed is not worth a late text
                planned.append(_plan(appointment, patient, recipient, SmsKind.REMINDER, due, now))
    db.session.flush()
    return planned


def cancel_pending(appointment: Appointment, reason: str) -> int:
    """Mark every text still waiting for this appointment cancelled; returns how many."""
    rows = db.session.execute(db.select(SmsMessage).where(
        SmsMessage.appointment_id == appointment.id,
        SmsMessage.status == SmsStatus.SCHEDULED)).scalars().all()
    for row in rows:
        row.status = SmsStatus.CANCELLED
        row.error_message = reason[:300]
        row.next_attempt_at = None
    return len(rows)


def _has_texts(appointment: Appointment, patient: Participant) -> bool:
    return db.session.execute(db.select(SmsMessage.id).where(
        SmsMessage.appointment_id == appointment.id,
        SmsMessage.participant_id == patient.id).limit(1)).first() is not None


def _patients(appointment: Appointment) -> list[Participant]:
    return [p for p in appointment.participants if p.role == ParticipantRole.PATIENT]


def _plan(appointment: Appointment, patient: Participant, recipient: SmsRecipient, kind: str,
          scheduled_for: datetime, now: datetime) -> SmsMessage:
    language = texts.locale_for(recipient.language or patient.language)
    row = SmsMessage(appointment=appointment, participant=patient, kind=kind,
                     language=language, scheduled_for=scheduled_for, attempts=0,
                     status=SmsStatus.SCHEDULED, created_at=now)
    if recipient.phone_line_type == LANDLINE:
        # Recorded, not sent, so the admin sees why this patient got nothing.
        row.status, row.error_message = SmsStatus.SUPPRESSED, LANDLINE
    else:
        url = None
        if kind != SmsKind.CANCELLATION:
            url = join_url(add_join_link(patient))
        row.body_encrypted = at_rest.encrypt(
            texts.render(kind, language, appointment, url), BODY_PURPOSE)
    db.session.add(row)
    return row


def join_url(token: str) -> str:
    """The link a text carries for a join token."""
    return f"{current_app.config['PUBLIC_BASE_URL']}/j/{token}"
