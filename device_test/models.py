"""Device test results: what each check measured, kept for write-back and reports.

A result may belong to no appointment (``/device-test`` opened by anyone) and holds no
identity beyond row ids: no IP address, and only a short browser/OS summary.
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from extensions import db
from visits.models import UTCDateTime, one_of, utcnow

if TYPE_CHECKING:
    from visits.models import Appointment, Participant


class Outcome(enum.StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class DeviceTestResult(db.Model):
    """One completed device test.

    ``checks`` maps a check name (speaker, microphone, camera, connection, test_call)
    to ``{"status": "pass"|"warn"|"fail"|"skipped", ...measurements}``; its shape is
    owned by the device test feature, which is why it is JSON and not columns.
    """

    __tablename__ = "device_test_results"
    __table_args__ = (one_of("overall", Outcome),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # SET NULL: results outlive a purged appointment for aggregate reports.
    appointment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="SET NULL"), index=True)
    participant_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    overall: Mapped[str] = mapped_column(sa.String(8))
    checks: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    # "Chrome 131 / Windows": enough to spot a browser-specific failure, not to fingerprint.
    user_agent_summary: Mapped[str | None] = mapped_column(sa.String(120))

    # Backrefs live here so visits/ does not depend on device_test/; without delete
    # cascade the ORM nulls the keys itself when an appointment or participant goes.
    appointment: Mapped[Appointment | None] = relationship(
        backref=backref("device_test_results"))
    participant: Mapped[Participant | None] = relationship(
        backref=backref("device_test_results"))

    def __repr__(self) -> str:
        return (f"<DeviceTestResult {self.id} appointment={self.appointment_id} "
                f"overall={self.overall}>")
