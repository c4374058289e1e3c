"""usage report: the settled visits' sums per endpoint's clinic day, department and provider

Revision ID: d5e7a9c1b246
Revises: b2d4f6a8c013
Create Date: 2026-12-05 09:00:00

Issue 12 ("each report renders in ≤ 1 s at 1,000,000 visits"): a year of the usage report
added up a line per visit (8.7 s at a million). ``usage_day_sums`` (per endpoint, clinic
day and department), ``usage_provider_day_sums`` (the same per first provider) and
``usage_day_languages`` hold the settled visits' counts and, per measure, the least and
greatest value and a count per bucket, for medians and 90th percentiles
(reports/usage_sums.py). They are filled by the usage refresh from the kept facts, up to
``usage_facts_state.sums_before`` (NULL here: the next refresh counts every kept visit).
``stragglers_checked_through`` is how far the late-booking check has looked (by
appointment id), so each refresh looks only at appointments added since.
The columns are written out as they were made on this day (reports/models.py makes them
from its bucket edges), so this migration stays what it was when those change.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d5e7a9c1b246"
down_revision = "b2d4f6a8c013"
branch_labels = None
depends_on = None

COUNTS = ("scheduled", "started", "completed", "no_shows", "left_before_admitted",
          "provider_never_joined", "cancelled", "patients_joined", "device_tested",
          "device_passed", "route_sms", "route_mychart", "route_guest", "route_none")
BUCKETS = {"wait": 38, "duration": 38, "lateness": 23}


def _sums() -> list[sa.Column]:
    columns = [sa.Column(name, sa.Integer(), server_default="0", nullable=False)
               for name in COUNTS]
    for measure, buckets in BUCKETS.items():
        columns += [sa.Column(f"{measure}_min", sa.Float(), nullable=True),
                    sa.Column(f"{measure}_max", sa.Float(), nullable=True)]
        columns += [sa.Column(f"{measure}_b{index}", sa.Integer(), server_default="0",
                              nullable=False) for index in range(buckets)]
    return columns


def _create_sums(name: str, *keys: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=True),
        *keys, *_sums(),
        sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{name}")),
    )
    op.create_index(f"ix_{name}_endpoint_id_day", name, ["endpoint_id", "day"], unique=False)


def upgrade() -> None:
    with op.batch_alter_table("usage_facts_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sums_before", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("stragglers_checked_through", sa.Integer(), nullable=True))
    _create_sums("usage_day_sums")
    _create_sums("usage_provider_day_sums",
                 sa.Column("provider_ehr_id", sa.String(length=255), nullable=True),
                 sa.Column("provider_name", sa.String(length=200), nullable=True))
    op.create_table(
        "usage_day_languages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("patients", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_day_languages")),
    )
    op.create_index("ix_usage_day_languages_endpoint_id_day", "usage_day_languages",
                    ["endpoint_id", "day"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_usage_day_languages_endpoint_id_day", table_name="usage_day_languages")
    op.drop_table("usage_day_languages")
    op.drop_index("ix_usage_provider_day_sums_endpoint_id_day",
                  table_name="usage_provider_day_sums")
    op.drop_table("usage_provider_day_sums")
    op.drop_index("ix_usage_day_sums_endpoint_id_day", table_name="usage_day_sums")
    op.drop_table("usage_day_sums")
    with op.batch_alter_table("usage_facts_state", schema=None) as batch_op:
        batch_op.drop_column("stragglers_checked_through")
        batch_op.drop_column("sums_before")
