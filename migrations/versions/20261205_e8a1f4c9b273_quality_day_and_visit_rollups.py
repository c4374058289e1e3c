"""call quality: per-day and per-visit rollups, so the report reads a few rows a day

Revision ID: e8a1f4c9b273
Revises: d3b8f1a6c402
Create Date: 2026-12-05 00:30:00

Issue 12, call quality at scale (1,000,000 visits, 20,000,000 samples, a year in under a
second). Each person's rollup gets ``day`` (its first sample's day in the endpoint's time
zone, indexed with the endpoint); ``call_quality_days`` sums the rollups per endpoint, day,
role and browser/OS family; ``call_quality_visits`` per visit, with its mean MOS indexed for
"the worst visits". Both are kept as samples arrive (visits/quality.py). Rows that exist are
summed in here once.
"""
from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from alembic import op

revision = "e8a1f4c9b273"
down_revision = "d3b8f1a6c402"
branch_labels = None
depends_on = None

_METRICS = ("rtt", "jitter", "loss", "bitrate", "mos")


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")


def _sum(name: str) -> sa.Column:
    return sa.Column(name, sa.Float(), nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("call_quality_rollups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("day", sa.Date(), nullable=True))
    op.create_table(
        "call_quality_days",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("browser_family", sa.String(length=24), nullable=False),
        sa.Column("os_family", sa.String(length=24), nullable=False),
        _count("people"), _count("relayed_people"), _count("samples"), _count("poor"),
        *[column for metric in _METRICS for column in (_sum(f"{metric}_sum"),
                                                        _count(f"{metric}_n"))],
        *[_count(f"{metric}_b{index}") for metric in _METRICS for index in range(5)],
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_quality_days")),
        sa.UniqueConstraint("endpoint_id", "day", "role", "browser_family", "os_family",
                            name="uq_call_quality_days_endpoint_id_day_role_families"),
    )
    op.create_table(
        "call_quality_visits",
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        _count("people"), _count("relayed"), _count("samples"), _count("poor"),
        _sum("rtt_sum"), _count("rtt_n"), _sum("loss_sum"), _count("loss_n"),
        _sum("mos_sum"), _count("mos_n"),
        sa.Column("mos_mean", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"],
                                name=op.f("fk_call_quality_visits_appointment_id_appointments"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("appointment_id", name=op.f("pk_call_quality_visits")),
    )
    with op.batch_alter_table("call_quality_visits", schema=None) as batch_op:
        batch_op.create_index("ix_call_quality_visits_endpoint_id_day",
                              ["endpoint_id", "day", "relayed"], unique=False)
        batch_op.create_index(batch_op.f("ix_call_quality_visits_mos_mean"), ["mos_mean"],
                              unique=False)
    _backfill()
    with op.batch_alter_table("call_quality_rollups", schema=None) as batch_op:
        batch_op.alter_column("day", existing_type=sa.Date(), nullable=False)
        batch_op.drop_index("ix_call_quality_rollups_endpoint_id_first_at")
        batch_op.create_index("ix_call_quality_rollups_endpoint_id_day", ["endpoint_id", "day"],
                              unique=False)


def _backfill() -> None:
    """The rollups kept so far (an hour's worth when this shipped) get their day, and are
    summed into the two new tables: in Python, since SQLite has no time zones."""
    bind = op.get_bind()
    zones = {}
    for endpoint_id, name in bind.execute(sa.text("SELECT id, site_timezone FROM ehr_endpoints")):
        try:
            zones[endpoint_id] = ZoneInfo(name or "UTC")
        except (ZoneInfoNotFoundError, ValueError):
            zones[endpoint_id] = ZoneInfo("UTC")
    rows = bind.execute(sa.text("SELECT * FROM call_quality_rollups")).mappings().all()
    days: dict[tuple, dict] = {}
    visits: dict[int, dict] = {}
    sums = ["samples", "poor"] + [f"{m}_{p}" for m in _METRICS for p in ("sum", "n")] + [
        f"{m}_b{i}" for m in _METRICS for i in range(5)]
    for row in rows:
        first = row["first_at"]
        if isinstance(first, str):  # SQLite
            first = datetime.fromisoformat(first)
        if first.tzinfo is None:
            first = first.replace(tzinfo=timezone.utc)
        day = first.astimezone(zones.get(row["endpoint_id"], ZoneInfo("UTC"))).date()
        bind.execute(sa.text("UPDATE call_quality_rollups SET day = :day "
                             "WHERE participant_id = :id"), {"day": day, "id": row["participant_id"]})
        key = (row["endpoint_id"], day, row["role"], row["browser_family"] or "",
               row["os_family"] or "")
        total = days.setdefault(key, dict.fromkeys(["people", "relayed_people", *sums], 0))
        total["people"] += 1
        total["relayed_people"] += int(row["relayed"] > 0)
        for name in sums:
            total[name] += row[name] or 0
        visit = visits.setdefault(row["appointment_id"], {
            "appointment_id": row["appointment_id"], "endpoint_id": row["endpoint_id"],
            "day": day, "first_at": first, **dict.fromkeys(
                ["people", "relayed", "samples", "poor", "rtt_sum", "rtt_n", "loss_sum",
                 "loss_n", "mos_sum", "mos_n"], 0)})
        visit["people"] += 1
        visit["relayed"] += int(row["relayed"] > 0)
        visit["first_at"] = min(visit["first_at"], first)
        for name in ("samples", "poor", "rtt_sum", "rtt_n", "loss_sum", "loss_n", "mos_sum",
                     "mos_n"):
            visit[name] += row[name] or 0
    days_table = sa.table("call_quality_days", *[sa.column(name) for name in (
        "endpoint_id", "day", "role", "browser_family", "os_family", "people",
        "relayed_people", *sums)])
    visits_table = sa.table("call_quality_visits", *[sa.column(name) for name in (
        "appointment_id", "endpoint_id", "day", "first_at", "people", "relayed", "samples",
        "poor", "rtt_sum", "rtt_n", "loss_sum", "loss_n", "mos_sum", "mos_n", "mos_mean")])
    if days:
        op.bulk_insert(days_table, [
            {"endpoint_id": k[0], "day": k[1], "role": k[2], "browser_family": k[3],
             "os_family": k[4], **v} for k, v in days.items()])
    if visits:
        op.bulk_insert(visits_table, [
            {**v, "mos_mean": v["mos_sum"] / v["mos_n"] if v["mos_n"] else None}
            for v in visits.values()])


def downgrade() -> None:
    with op.batch_alter_table("call_quality_rollups", schema=None) as batch_op:
        batch_op.drop_index("ix_call_quality_rollups_endpoint_id_day")
        batch_op.create_index("ix_call_quality_rollups_endpoint_id_first_at",
                              ["endpoint_id", "first_at"], unique=False)
        batch_op.drop_column("day")
    with op.batch_alter_table("call_quality_visits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_quality_visits_mos_mean"))
        batch_op.drop_index("ix_call_quality_visits_endpoint_id_day")
    op.drop_table("call_quality_visits")
    op.drop_table("call_quality_days")
