"""integration health report: backend token failures, an index on HL7 receipts

Revision ID: f2c8a4e6d171
Revises: e5a1c7d3b920
Create Date: 2026-12-04 22:30:00

Issue 12 ("Reports for the clinic"), integration health: each failed backend-services
token request for write-backs is kept (when, the error's class) so the report and
``/metrics`` can count them; HL7 receipts get an index for "ACKs by code over a date
range, per endpoint" and "the last message received".
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "f2c8a4e6d171"
down_revision = "e5a1c7d3b920"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "backend_token_failures",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error", sa.String(length=120), nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"],
                                name=op.f("fk_backend_token_failures_endpoint_id_ehr_endpoints"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backend_token_failures")),
    )
    with op.batch_alter_table("backend_token_failures", schema=None) as batch_op:
        batch_op.create_index("ix_backend_token_failures_endpoint_id_at",
                              ["endpoint_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_backend_token_failures_at"), ["at"], unique=False)
    with op.batch_alter_table("hl7_message_receipts", schema=None) as batch_op:
        batch_op.create_index("ix_hl7_message_receipts_endpoint_id_received_at",
                              ["endpoint_id", "received_at", "ack_code"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("hl7_message_receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_hl7_message_receipts_endpoint_id_received_at")
    with op.batch_alter_table("backend_token_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backend_token_failures_at"))
        batch_op.drop_index("ix_backend_token_failures_endpoint_id_at")
    op.drop_table("backend_token_failures")
