"""Forget what texts needed once a visit is over: the phone number and the bodies.

"Over" means cancelled, no-show or ended by the provider, or past its scheduled end by
the endpoint's link grace period (after which its join links stop working anyway).
A cancellation text still waiting to go out keeps the phone until it is sent or the
grace period passes, so the patient still hears that the visit is off.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from extensions import db
from notifications.models import SmsKind, SmsMessage, SmsRecipient, SmsStatus
from visits.models import Appointment, AppointmentStatus, Participant

log = logging.getLogger(__name__)

_OVER = (AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW)


def purge_finished(now: datetime) -> int:
    """Delete phones and null bodies of finished visits; returns how many visits. Commits."""
    candidates = db.session.execute(
        sa.select(Appointment).where(
            Appointment.id.in_(_holding_text_data()),
            sa.or_(Appointment.status.in_(_OVER), Appointment.ended_at.is_not(None),
                   Appointment.end_at <= now))).scalars().all()
    finished = [a.id for a in candidates if _is_over(a, now)]
    if not finished:
        db.session.rollback()
        return 0
    if db.session.get_bind().dialect.name == "sqlite":
        # Overwrite freed space, so a deleted number does not linger in the file's pages.
        db.session.execute(sa.text("PRAGMA secure_delete = ON"))
    participants = sa.select(Participant.id).where(Participant.appointment_id.in_(finished))
    db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.appointment_id.in_(finished),
                                    SmsMessage.status == SmsStatus.SCHEDULED)
        .values(status=SmsStatus.CANCELLED, error_message="visit over", next_attempt_at=None)
        .execution_options(synchronize_session=False))
    db.session.execute(
        sa.update(SmsMessage).where(SmsMessage.appointment_id.in_(finished))
        .values(body_encrypted=None).execution_options(synchronize_session=False))
    db.session.execute(
        sa.delete(SmsRecipient).where(SmsRecipient.participant_id.in_(participants))
        .execution_options(synchronize_session=False))
    db.session.commit()
    if db.session.get_bind().dialect.name == "sqlite":
        # And out of the write-ahead log, which still holds the pages as first written.
        db.session.execute(sa.text("PRAGMA wal_checkpoint(TRUNCATE)"))
        db.session.commit()
    db.session.expire_all()
    log.info("sms data of finished visits deleted", extra={"appointments": len(finished)})
    return len(finished)


def _holding_text_data() -> sa.CompoundSelect:
    """The visits that still hold a phone or a text body. Runs every few seconds in every
    process, so it starts from those rows, not from every appointment ever booked: the
    phones table holds only the phones still kept, and the texts with a body are read
    from their own partial index (``ix_sms_messages_held_bodies``). A pass costs what is
    still held, not the size of the history."""
    # Asked as "participants whose id is among the phones'", not as a join: with a join,
    # SQLite chose to walk every participant and look each one's phone up.
    with_phone = (sa.select(Participant.appointment_id)
                  .where(Participant.id.in_(sa.select(SmsRecipient.participant_id))))
    with_body = (sa.select(SmsMessage.appointment_id)
                 .where(SmsMessage.body_encrypted.is_not(None)))
    return sa.union(with_phone, with_body)


def _is_over(appointment: Appointment, now: datetime) -> bool:
    grace = timedelta(minutes=appointment.endpoint.link_valid_after_end_minutes)
    if appointment.end_at + grace <= now:
        return True
    if appointment.status not in _OVER and appointment.ended_at is None:
        return False
    # Cancelled or ended early: wait for a cancellation text still to go (or one being
    # sent, which may need the number to be looked up at the carrier after a crash).
    waiting = db.session.execute(sa.select(SmsMessage.id).where(
        SmsMessage.appointment_id == appointment.id, SmsMessage.kind == SmsKind.CANCELLATION,
        SmsMessage.status.in_((SmsStatus.SCHEDULED, SmsStatus.SENDING))).limit(1)).first()
    return waiting is None
