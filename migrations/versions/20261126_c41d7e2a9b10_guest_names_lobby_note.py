"""guest and interpreter display names, the provider's lobby note

Revision ID: c41d7e2a9b10
Revises: 95e55be3b3f2
Create Date: 2026-11-26 13:30:00

A provider adds guests and interpreters by name, so only patients stay unnamed; and a
provider can leave a short note in the lobby ("Running 10 minutes late").
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c41d7e2a9b10"
down_revision = "95e55be3b3f2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_participants_display_name_provider_only"), type_="check")
        batch_op.create_check_constraint(op.f("ck_participants_display_name_not_patient"),
                                         "display_name IS NULL OR role != 'patient'")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lobby_note", sa.String(200), nullable=True))
        batch_op.add_column(sa.Column("lobby_note_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_column("lobby_note_at")
        batch_op.drop_column("lobby_note")
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_participants_display_name_not_patient"), type_="check")
        batch_op.create_check_constraint(op.f("ck_participants_display_name_provider_only"),
                                         "display_name IS NULL OR role = 'provider'")
