"""write-back outbox: which server process holds a claim; due rows per endpoint

Revision ID: acca826fe567
Revises: 7d2b4e8f1a63
Create Date: 2026-11-27 09:00:00

A claim now names the server process that made it (``server_processes.process_id``), so
when that process's heartbeat stops, its rows go back to the queue without waiting for
the whole lease to run out (a restart gets its own rows back within seconds). Delivery
asks each EHR with free slots for its next due rows; an index answers that without
reading another EHR's backlog.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "acca826fe567"
down_revision = "7d2b4e8f1a63"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("writeback_outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(64), nullable=True))
        batch_op.create_index("ix_writeback_outbox_endpoint_id_status_next_attempt_at",
                              ["endpoint_id", "status", "next_attempt_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("writeback_outbox", schema=None) as batch_op:
        batch_op.drop_index("ix_writeback_outbox_endpoint_id_status_next_attempt_at")
        batch_op.drop_column("claimed_by")
