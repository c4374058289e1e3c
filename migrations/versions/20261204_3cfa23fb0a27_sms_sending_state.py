"""sms: a "sending" state, per-claim ids and our own id for each hand-over to the carrier

Revision ID: 3cfa23fb0a27
Revises: b7e3d1c9a052
Create Date: 2026-12-04 21:00:00

Issue 13 ("Nothing doubled, nothing lost"): a text is leased when its own send starts
(``claim_id`` names the claim), and recorded as ``sending`` with our id for that hand-over
(``send_ref``, also in Twilio's StatusCallback URL) and its start time before the carrier
is called. A text left ``sending`` by a process that died is looked up at the carrier
before anything is sent again; ``send_ref`` is indexed for the delivery reports that
carry it.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "3cfa23fb0a27"
down_revision = "b7e3d1c9a052"
branch_labels = None
depends_on = None

_BEFORE = "status IN ('scheduled', 'sent', 'delivered', 'failed', 'cancelled', 'suppressed')"
_AFTER = ("status IN ('scheduled', 'sending', 'sent', 'delivered', 'failed', 'cancelled', "
          "'suppressed')")


def upgrade() -> None:
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_id", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("send_ref", sa.String(32), nullable=True))
        batch_op.add_column(sa.Column("send_started_at", sa.DateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index(batch_op.f("ix_sms_messages_send_ref"), ["send_ref"],
                              unique=False)
        batch_op.drop_constraint(batch_op.f("ck_sms_messages_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_sms_messages_status"), _AFTER)


def downgrade() -> None:
    # Without the state, a text in doubt could only look scheduled and be sent again;
    # failed keeps it from going twice.
    op.execute("UPDATE sms_messages SET status = 'failed' WHERE status = 'sending'")
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("ck_sms_messages_status"), type_="check")
        batch_op.create_check_constraint(batch_op.f("ck_sms_messages_status"), _BEFORE)
        batch_op.drop_index(batch_op.f("ix_sms_messages_send_ref"))
        batch_op.drop_column("send_started_at")
        batch_op.drop_column("send_ref")
        batch_op.drop_column("claim_id")
