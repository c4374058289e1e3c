"""usage report: how a participant joined, an index for an endpoint's visits by day, and
the per-visit facts of settled visits

Revision ID: c7e2f9a4b861
Revises: a9d4c2e7f318
Create Date: 2026-12-05 00:10:00

Issue 12 ("Reports for the clinic"), usage. ``participants.join_route`` records how a
participant last opened the visit: ``sms`` (a patient's personal link), ``mychart`` (the
patient portal's launch) or ``guest`` (a guest's or interpreter's link); NULL for rows
from before. ``ix_appointments_endpoint_id_start_at`` serves "this endpoint's visits
scheduled in these days", which every usage figure starts from. ``usage_visit_facts``
holds one row per settled visit (two days after its scheduled start) with what the usage
report counts, filled incrementally up to ``usage_facts_state.settled_before``.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "c7e2f9a4b861"
down_revision = "a9d4c2e7f318"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("join_route", sa.String(length=16), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_participants_join_route"), "join_route IN ('sms', 'mychart', 'guest')")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.create_index("ix_appointments_endpoint_id_start_at",
                              ["endpoint_id", "start_at"], unique=False)
    op.create_table(
        "usage_visit_facts",
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("department", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("patient_joined", sa.Boolean(), nullable=False),
        sa.Column("admitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lobby_entered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("provider_joined", sa.Boolean(), nullable=False),
        sa.Column("provider_ehr_id", sa.String(length=255), nullable=True),
        sa.Column("provider_name", sa.String(length=200), nullable=True),
        sa.Column("join_route", sa.String(length=16), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("device_test", sa.String(length=8), nullable=True),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"],
                                name=op.f("fk_usage_visit_facts_appointment_id_appointments"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("appointment_id", name=op.f("pk_usage_visit_facts")),
    )
    with op.batch_alter_table("usage_visit_facts", schema=None) as batch_op:
        batch_op.create_index("ix_usage_visit_facts_endpoint_id_start_at",
                              ["endpoint_id", "start_at"], unique=False)
    op.create_table(
        "usage_facts_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("settled_before", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_facts_state")),
    )


def downgrade() -> None:
    op.drop_table("usage_facts_state")
    with op.batch_alter_table("usage_visit_facts", schema=None) as batch_op:
        batch_op.drop_index("ix_usage_visit_facts_endpoint_id_start_at")
    op.drop_table("usage_visit_facts")
    with op.batch_alter_table("appointments", schema=None) as batch_op:
        batch_op.drop_index("ix_appointments_endpoint_id_start_at")
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_participants_join_route"), type_="check")
        batch_op.drop_column("join_route")
