"""hl7: per-endpoint counts of the ACK codes we replied with

Revision ID: b2d4f6a8c013
Revises: a7c3e9d2f514
Create Date: 2026-12-05 07:00:00

Issue 11 ("periodic work proportional to what changed"): ``/metrics`` counted every HL7
receipt ever kept on each scrape. ``hl7_ack_counts`` keeps the counts as receipts get
their code; filled here from the receipts already kept.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "b2d4f6a8c013"
down_revision = "a7c3e9d2f514"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_ack_counts",
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("ack_code", sa.String(length=2), nullable=False),
        sa.Column("messages", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_received_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("ack_code IN ('AA', 'AE', 'AR')",
                           name=op.f("ck_hl7_ack_counts_ack_code")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"],
                                name=op.f("fk_hl7_ack_counts_endpoint_id_ehr_endpoints"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("endpoint_id", "ack_code", name=op.f("pk_hl7_ack_counts")),
    )
    op.execute(
        "INSERT INTO hl7_ack_counts (endpoint_id, ack_code, messages, last_received_at) "
        "SELECT endpoint_id, ack_code, count(*), max(received_at) FROM hl7_message_receipts "
        "WHERE ack_code IS NOT NULL GROUP BY endpoint_id, ack_code")


def downgrade() -> None:
    op.drop_table("hl7_ack_counts")
