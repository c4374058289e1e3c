"""presence: index the participants whose last connection closed

Revision ID: b7e3d1c9a052
Revises: acca826fe567
Create Date: 2026-12-04 18:00:00

The presence sweep asks "whose grace period is over?" every few seconds. With an index on
``participants.sockets_gone_at`` it reads only the participants who are reconnecting now,
instead of every participant ever (issue 11: periodic work proportional to what changed).
"""
from __future__ import annotations

from alembic import op

revision = "b7e3d1c9a052"
down_revision = "acca826fe567"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.create_index("ix_participants_sockets_gone_at", ["sockets_gone_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_index("ix_participants_sockets_gone_at")
