"""SMS rows: who to text (encrypted), what was sent and how it went, who said STOP.

Phone numbers and message bodies are encrypted at rest by the notifications services
(a key derived from SECRET_KEY) and reach this module only as ciphertext. A recipient's
phone is deleted when the appointment is over; deleting the participant or the
appointment deletes it too. Opt-outs are kept as an HMAC of the number, so they can be
matched without keeping the number.
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from extensions import db
from visits.models import UTCDateTime, one_of, utcnow

if TYPE_CHECKING:
    from ehr.models import EhrEndpoint
    from visits.models import Appointment, Participant


# at_rest purposes: the recipient's number, and a rendered text (it holds a join link).
PHONE_PURPOSE = "sms-phone"
BODY_PURPOSE = "sms-body"


class SmsKind(enum.StrEnum):
    CONFIRMATION = "confirmation"
    RESCHEDULE = "reschedule"
    CANCELLATION = "cancellation"
    REMINDER = "reminder"
    # A provider texted a guest or interpreter their link from the visit page.
    INVITATION = "invitation"
    # An admin's self-test text to a number they typed; no appointment.
    TEST = "test"


class SmsStatus(enum.StrEnum):
    SCHEDULED = "scheduled"
    # Handed to the carrier, outcome not recorded yet. Written (with ``send_ref``) before
    # the carrier is called, so a text whose process died mid-send is looked up at the
    # carrier before anything is sent again (notifications.sending).
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # Not sent on purpose: opted out, landline, or the visit already started.
    SUPPRESSED = "suppressed"


class SmsRecipient(db.Model):
    """The phone a participant is texted at. One per participant."""

    __tablename__ = "sms_recipients"

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), unique=True)
    phone_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    # From a carrier lookup ("mobile", "landline", "voip"); landlines are not texted.
    phone_line_type: Mapped[str | None] = mapped_column(sa.String(32))
    language: Mapped[str | None] = mapped_column(sa.String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # The backref lives here so visits/ does not depend on notifications/. It cascades
    # in the ORM as well as in the database so the phone goes with the participant
    # even on SQLite, which enforces ON DELETE only with PRAGMA foreign_keys on.
    participant: Mapped[Participant] = relationship(
        backref=backref("sms_recipient", uselist=False, cascade="all, delete-orphan"))

    def __repr__(self) -> str:
        return f"<SmsRecipient {self.id} participant={self.participant_id}>"


class SmsMessage(db.Model):
    """One text to send or sent, with its delivery status from the provider."""

    __tablename__ = "sms_messages"
    __table_args__ = (
        # The scheduler asks "scheduled and due"; this index answers it.
        sa.Index("ix_sms_messages_status_scheduled_for", "status", "scheduled_for"),
        # The texts report asks "texts due in these days".
        sa.Index("ix_sms_messages_scheduled_for", "scheduled_for"),
        # Retention asks "which visits still hold a text body": only those rows are here.
        sa.Index("ix_sms_messages_held_bodies", "appointment_id",
                 sqlite_where=sa.text("body_encrypted IS NOT NULL"),
                 postgresql_where=sa.text("body_encrypted IS NOT NULL")),
        one_of("kind", SmsKind),
        one_of("status", SmsStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # NULL only for an admin's self-test text.
    appointment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="CASCADE"), index=True)
    participant_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="SET NULL"), index=True)
    kind: Mapped[str] = mapped_column(sa.String(16))
    language: Mapped[str] = mapped_column(sa.String(16))
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(sa.String(16), default=SmsStatus.SCHEDULED)
    # Rendered text, encrypted; NULL until rendered and again once the visit is over.
    body_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    # The provider's id (Twilio's SID), which delivery callbacks refer to.
    provider_message_id: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    status_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    error_code: Mapped[str | None] = mapped_column(sa.String(32))
    # Why it failed or was suppressed, in words (never the number or the text).
    error_message: Mapped[str | None] = mapped_column(sa.String(300))
    # Sending attempts so far; a failed attempt is retried at next_attempt_at (backoff).
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A process that claimed the row holds it until then (wall-clock time), renewing it
    # while the carrier answers; ``claim_id`` names that claim (random, one per claim), and
    # a result is recorded only while the row still carries it.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    claim_id: Mapped[str | None] = mapped_column(sa.String(32))
    # Our id for the latest hand-over to the carrier, stored before the call and sent with
    # it (Twilio: in the StatusCallback URL), and when that hand-over began: what matches
    # the carrier's records to this row after a crash.
    send_ref: Mapped[str | None] = mapped_column(sa.String(32), index=True)
    send_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    appointment: Mapped[Appointment | None] = relationship(
        backref=backref("sms_messages", cascade="all, delete-orphan"))
    participant: Mapped[Participant | None] = relationship(backref=backref("sms_messages"))

    def __repr__(self) -> str:
        return (f"<SmsMessage {self.id} appointment={self.appointment_id} kind={self.kind} "
                f"status={self.status}>")


class SmsOptOut(db.Model):
    """A number that replied STOP, as an HMAC so the number itself is not kept."""

    __tablename__ = "sms_opt_outs"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    # Where the STOP came in. SET NULL, never CASCADE: losing an opt-out would text
    # someone who asked not to be texted.
    endpoint_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    endpoint: Mapped[EhrEndpoint | None] = relationship()

    def __repr__(self) -> str:
        return f"<SmsOptOut {self.id} endpoint={self.endpoint_id}>"


class OptChange(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"


class SmsOptEvent(db.Model):
    """A STOP or START that changed whether a number is texted, for the texts report's
    opt-outs and opt-ins over time. Only when and where: neither the number nor its hash,
    so the row cannot be tied back to a person."""

    __tablename__ = "sms_opt_events"
    __table_args__ = (
        sa.Index("ix_sms_opt_events_at", "at"),
        one_of("change", OptChange),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    change: Mapped[str] = mapped_column(sa.String(16))
    # The endpoint whose sending number was texted, when known.
    endpoint_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="SET NULL"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<SmsOptEvent {self.id} {self.change} endpoint={self.endpoint_id}>"
