"""texts report: texts counted per settled day

Revision ID: f4b2c8d1e937
Revises: e8a1f4c9b273
Create Date: 2026-12-05 00:40:00

Issue 12, texts at scale: a day's texts are final two days after it ends, so they are
counted once per endpoint, day, kind, outcome and reason into ``sms_report_days``; the
report reads those rows and counts only the last few days live (reports/texts.py).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f4b2c8d1e937"
down_revision = "e8a1f4c9b273"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sms_report_days",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error_code", sa.String(length=32), nullable=True),
        sa.Column("reason", sa.String(length=300), nullable=True),
        sa.Column("texts", sa.Integer(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_report_days")),
    )
    with op.batch_alter_table("sms_report_days", schema=None) as batch_op:
        batch_op.create_index("ix_sms_report_days_endpoint_id_day", ["endpoint_id", "day"],
                              unique=False)
    op.create_table(
        "sms_report_state",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("settled_through", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_report_state")),
    )


def downgrade() -> None:
    op.drop_table("sms_report_state")
    with op.batch_alter_table("sms_report_days", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_report_days_endpoint_id_day")
    op.drop_table("sms_report_days")
