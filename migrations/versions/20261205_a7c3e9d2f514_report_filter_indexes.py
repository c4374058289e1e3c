"""reports: indexes for the department and provider filters

Revision ID: a7c3e9d2f514
Revises: f4b2c8d1e937
Create Date: 2026-12-05 00:50:00

Issue 12: the call-quality and texts reports filtered by a department or a provider start
from that department's or provider's visits (``appointments (endpoint_id,
department_display)``, ``participants (ehr_user_id)``) rather than checking each row.
"""
from __future__ import annotations

from alembic import op

revision = "a7c3e9d2f514"
down_revision = "f4b2c8d1e937"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index("ix_appointments_endpoint_id_department_display",
                              ["endpoint_id", "department_display"], unique=False)
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.create_index("ix_participants_ehr_user_id", ["ehr_user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_index("ix_participants_ehr_user_id")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index("ix_appointments_endpoint_id_department_display")
