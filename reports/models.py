"""Rows the reports keep for themselves: the usage report's per-visit facts, frozen once a
visit is settled (reports/usage.py, ``refresh_facts``), so a report over months reads one
narrow row per visit instead of recomputing it from participants, lobby entries and
device tests. No patient data: ids, times, flags, the route and language codes."""
from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from visits.models import UTCDateTime


class UsageVisitFacts(db.Model):
    """One settled visit as the usage report counts it (reports/usage.py ``VisitFacts``)."""

    __tablename__ = "usage_visit_facts"
    __table_args__ = (
        sa.Index("ix_usage_visit_facts_endpoint_id_start_at", "endpoint_id", "start_at"),
    )

    appointment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="CASCADE"), primary_key=True,
        autoincrement=False)
    endpoint_id: Mapped[int] = mapped_column(sa.Integer)
    start_at: Mapped[datetime] = mapped_column(UTCDateTime())
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    department: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    patient_joined: Mapped[bool] = mapped_column(sa.Boolean)
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lobby_entered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    provider_joined: Mapped[bool] = mapped_column(sa.Boolean)
    provider_ehr_id: Mapped[str | None] = mapped_column(sa.String(255))
    provider_name: Mapped[str | None] = mapped_column(sa.String(200))
    join_route: Mapped[str | None] = mapped_column(sa.String(16))
    language: Mapped[str | None] = mapped_column(sa.String(16))
    device_test: Mapped[str | None] = mapped_column(sa.String(8))


class UsageFactsState(db.Model):
    """How far the facts reach: every visit scheduled before ``settled_before`` has its row
    (one row, id 1)."""

    __tablename__ = "usage_facts_state"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    settled_before: Mapped[datetime] = mapped_column(UTCDateTime())


class SmsReportDay(db.Model):
    """How many texts due on one endpoint's (settled) day ended how, by kind and reason:
    what the texts report reads for days whose texts can no longer change
    (reports/texts.py, ``settle``)."""

    __tablename__ = "sms_report_days"
    __table_args__ = (
        sa.Index("ix_sms_report_days_endpoint_id_day", "endpoint_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(sa.Integer)
    day: Mapped[date] = mapped_column(sa.Date)
    kind: Mapped[str] = mapped_column(sa.String(16))
    outcome: Mapped[str] = mapped_column(sa.String(16))
    error_code: Mapped[str | None] = mapped_column(sa.String(32))
    reason: Mapped[str | None] = mapped_column(sa.String(300))
    texts: Mapped[int] = mapped_column(default=0, server_default="0")


class SmsReportState(db.Model):
    """One row: every day up to ``settled_through`` (a UTC date, at least two days before
    any zone's today) is counted in ``sms_report_days``."""

    __tablename__ = "sms_report_state"

    id: Mapped[int] = mapped_column(primary_key=True)
    settled_through: Mapped[date] = mapped_column(sa.Date)
