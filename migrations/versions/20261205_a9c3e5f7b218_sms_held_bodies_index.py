"""sms retention: index the texts that still hold a body

Revision ID: a9c3e5f7b218
Revises: d5e7a9c1b246
Create Date: 2026-12-05 15:00:00

Issue 11, periodic work proportional to what changed: every process asks every few
seconds which visits still hold a phone or a text body. It used to walk every
appointment ever booked; now it starts from the phones and from this partial index of
the texts whose body is still kept (only until their visit is over).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a9c3e5f7b218"
down_revision = "d5e7a9c1b246"
branch_labels = None
depends_on = None

_HELD = sa.text("body_encrypted IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.create_index("ix_sms_messages_held_bodies", ["appointment_id"], unique=False,
                              sqlite_where=_HELD, postgresql_where=_HELD)


def downgrade() -> None:
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_messages_held_bodies", sqlite_where=_HELD,
                            postgresql_where=_HELD)
