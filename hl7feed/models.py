"""HL7 feed rows: the messages we acknowledged, so a resend is applied only once.

The endpoints they arrive for, and the certificates those sign with, are EHR
configuration and stay in ``ehr.models``.
"""
from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ehr.models import EhrEndpoint
from extensions import db
from visits.models import UTCDateTime, one_of, utcnow


class AckCode(enum.StrEnum):
    ACCEPT = "AA"
    ERROR = "AE"
    REJECT = "AR"


class Hl7MessageReceipt(db.Model):
    """An HL7 message we accepted, keyed by sender and control id, so a resend is
    acknowledged again with the same code but applied only once."""

    __tablename__ = "hl7_message_receipts"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "sender", "control_id",
                            name="uq_hl7_message_receipts_endpoint_id_sender_control_id"),
        one_of("ack_code", AckCode),
        # The integration health report: per endpoint, ACKs by code over a date range and
        # the last message received.
        sa.Index("ix_hl7_message_receipts_endpoint_id_received_at", "endpoint_id",
                 "received_at", "ack_code"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="CASCADE"))
    # MSH-3 and MSH-4 (sending application and facility), e.g. "EPIC^CLINIC".
    sender: Mapped[str] = mapped_column(sa.String(200))
    # MSH-10; up to 199 characters from HL7 v2.5 on.
    control_id: Mapped[str] = mapped_column(sa.String(199))
    # MSH-9, e.g. "SIU^S12".
    message_type: Mapped[str] = mapped_column(sa.String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # NULL while the message is being applied; then the MSA-1 we replied with.
    ack_code: Mapped[str | None] = mapped_column(sa.String(2))

    endpoint: Mapped[EhrEndpoint] = relationship()

    def __repr__(self) -> str:
        return (f"<Hl7MessageReceipt {self.id} endpoint={self.endpoint_id} "
                f"{self.message_type} control_id={self.control_id!r} ack={self.ack_code}>")


class Hl7AckCount(db.Model):
    """How many messages each endpoint's feed was answered with each MSA-1 code, and the
    last one's time: kept as receipts get their code (one increment in the same
    transaction), so ``/metrics``, scraped every few seconds, reads a few rows instead of
    counting every receipt ever kept."""

    __tablename__ = "hl7_ack_counts"
    __table_args__ = (one_of("ack_code", AckCode),)

    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="CASCADE"), primary_key=True)
    ack_code: Mapped[str] = mapped_column(sa.String(2), primary_key=True)
    messages: Mapped[int] = mapped_column(default=0, server_default="0")
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime())
