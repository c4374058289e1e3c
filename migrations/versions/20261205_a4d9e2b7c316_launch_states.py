"""launch_states: provider launches waiting for the EHR's answer, by hashed OAuth state

Revision ID: a4d9e2b7c316
Revises: f2c8a4e6d171
Create Date: 2026-12-05 00:00:00

Issue 15, item 6: inside a cross-site EHR frame a browser may refuse the session cookie
that holds the pending launch. Kept on the server as well (SHA-256 of the state, the
endpoint, the EHR's iss and launch value encrypted, ten minutes), the callback can tell
that case from an unknown state and offer to open the launch in a window of its own.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a4d9e2b7c316"
down_revision = "f2c8a4e6d171"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "launch_states",
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("iss", sa.Text(), nullable=False),
        sa.Column("launch_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"],
                                name=op.f("fk_launch_states_endpoint_id_ehr_endpoints"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("state_hash", name=op.f("pk_launch_states")),
    )
    with op.batch_alter_table("launch_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_launch_states_endpoint_id"), ["endpoint_id"],
                              unique=False)
        batch_op.create_index(batch_op.f("ix_launch_states_expires_at"), ["expires_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("launch_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_launch_states_expires_at"))
        batch_op.drop_index(batch_op.f("ix_launch_states_endpoint_id"))
    op.drop_table("launch_states")
