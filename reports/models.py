"""Rows the reports keep for themselves: the usage report's per-visit facts, frozen once a
visit is settled (reports/usage.py, ``refresh_facts``), so a report over months reads one
narrow row per visit instead of recomputing it from participants, lobby entries and
device tests; and their sums per clinic day (reports/usage_sums.py), so a report over a
year of a large clinic adds up a few thousand rows instead of a million. No patient data:
ids, times, flags, the route and language codes, counts."""
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
    (one row, id 1); and the sums: every visit scheduled before ``sums_before`` is counted
    in ``usage_day_sums`` and the tables beside it (None: none is yet)."""

    __tablename__ = "usage_facts_state"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    settled_before: Mapped[datetime] = mapped_column(UTCDateTime())
    sums_before: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Appointments up to this id were looked at for late bookings (reports/usage.py).
    stragglers_checked_through: Mapped[int | None] = mapped_column(sa.Integer)


# --- the usage report's sums per clinic day --------------------------------------------------

# Upper bounds of the buckets the lobby wait and the visit's duration are counted in, in
# seconds (the first bucket also holds anything below 0, the last anything above 7,200):
# narrow where most visits fall, and every edge of the report's lobby-wait histogram
# (0, 1, 2, 5, 10, 15, 20, 30, 45, 60 minutes) among them, so that histogram is exact.
SPAN_EDGES = (0, 15, 30, 45, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540,
              600, 660, 720, 780, 840, 900, 1020, 1140, 1200, 1350, 1500, 1650, 1800, 2100,
              2400, 2700, 3000, 3600, 4500, 5400, 7200)
# Lateness, from the scheduled start to the admission, is negative when early.
LATENESS_EDGES = (-1800, -900, -600, -300, -180, -120, -60, -30, 0, 30, 60, 90, 120, 180,
                  240, 300, 420, 600, 900, 1200, 1800, 2700, 3600)
MEASURE_EDGES = {"wait": SPAN_EDGES, "duration": SPAN_EDGES, "lateness": LATENESS_EDGES}
# Visits counted per row: as reports/usage.py ``Counted`` defines them; routes among the
# patients who connected.
SUM_COUNTS = ("scheduled", "started", "completed", "no_shows", "left_before_admitted",
              "provider_never_joined", "cancelled", "patients_joined", "device_tested",
              "device_passed", "route_sms", "route_mychart", "route_guest", "route_none")


def bucket_columns(measure: str) -> list[str]:
    return [f"{measure}_b{index}" for index in range(len(MEASURE_EDGES[measure]))]


def _sum_columns() -> list[sa.Column]:
    """The counts, then per measure its least and greatest value (so the first and last
    values of a distribution are exact) and a count per bucket."""
    columns = [sa.Column(name, sa.Integer, nullable=False, server_default="0")
               for name in SUM_COUNTS]
    for measure in MEASURE_EDGES:
        columns += [sa.Column(f"{measure}_min", sa.Float), sa.Column(f"{measure}_max", sa.Float)]
        columns += [sa.Column(name, sa.Integer, nullable=False, server_default="0")
                    for name in bucket_columns(measure)]
    return columns


def _sums_table(name: str, *keys: sa.Column) -> sa.Table:
    """A table of sums per endpoint's clinic day and department (and ``keys``)."""
    return sa.Table(
        name, db.metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("endpoint_id", sa.Integer, nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("department", sa.String(200)),
        *keys, *_sum_columns(),
        sa.Index(f"ix_{name}_endpoint_id_day", "endpoint_id", "day"),
    )


class UsageDaySums(db.Model):
    """The settled visits of one endpoint's clinic day (in its time zone) in one department
    (None: no department), summed: every usage figure but the per-provider and language
    tables reads these."""

    __table__ = _sums_table("usage_day_sums")


class UsageProviderDaySums(db.Model):
    """The same sums per first provider (EHR id and display name, as the visits' facts keep
    them) of the endpoint's day and department: the per-provider table."""

    __table__ = _sums_table("usage_provider_day_sums", sa.Column("provider_ehr_id", sa.String(255)),
                            sa.Column("provider_name", sa.String(200)))


class UsageDayLanguages(db.Model):
    """Patients who connected, per language their clinic recorded, per endpoint's day and
    department."""

    __tablename__ = "usage_day_languages"
    __table_args__ = (
        sa.Index("ix_usage_day_languages_endpoint_id_day", "endpoint_id", "day"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(sa.Integer)
    day: Mapped[date] = mapped_column(sa.Date)
    department: Mapped[str | None] = mapped_column(sa.String(200))
    language: Mapped[str | None] = mapped_column(sa.String(16))
    patients: Mapped[int] = mapped_column(default=0, server_default="0")


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
