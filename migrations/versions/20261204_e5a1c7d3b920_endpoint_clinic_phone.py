"""ehr_endpoints: the clinic's phone number, shown to patients who wait too long

Revision ID: e5a1c7d3b920
Revises: 3cfa23fb0a27
Create Date: 2026-12-04 22:00:00

Issue 14 ("An honest lobby"): a patient still waiting some minutes past the start
(``VV_LOBBY_CALL_CLINIC_AFTER_MINUTES``) is shown the clinic's phone number, and so is a
patient whose link no longer works, when the endpoint has one. Empty by default.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e5a1c7d3b920"
down_revision = "3cfa23fb0a27"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ehr_endpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("clinic_phone", sa.String(40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ehr_endpoints", schema=None) as batch_op:
        batch_op.drop_column("clinic_phone")
