"""visit_ratings: a participant's optional one-tap rating (1-5) once their visit ended

Revision ID: d3b8f1a6c402
Revises: c7e2f9a4b861
Create Date: 2026-12-05 00:40:00

Issue 14 ("A clean end"): the patient (or a guest) may rate the visit 1 to 5 after the
provider ends it; the quality report reads it. A score, the rater's role and when: no free
text. One row per participant (a second tap replaces the score); SET NULL keeps the row for
aggregate figures when an appointment is purged.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "d3b8f1a6c402"
down_revision = "c7e2f9a4b861"
branch_labels = None
depends_on = None

TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "visit_ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=True),
        sa.Column("participant_id", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("score", sa.SmallInteger(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visit_ratings")),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"], ondelete="SET NULL",
                                name=op.f("fk_visit_ratings_appointment_id_appointments")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="SET NULL",
                                name=op.f("fk_visit_ratings_participant_id_participants")),
        sa.UniqueConstraint("participant_id", name=op.f("uq_visit_ratings_participant_id")),
        sa.CheckConstraint("role IN ('patient', 'provider', 'interpreter', 'guest')",
                           name=op.f("ck_visit_ratings_role")),
        sa.CheckConstraint("score BETWEEN 1 AND 5", name=op.f("ck_visit_ratings_score")),
    )
    op.create_index(op.f("ix_visit_ratings_appointment_id"), "visit_ratings",
                    ["appointment_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_visit_ratings_appointment_id"), table_name="visit_ratings")
    op.drop_table("visit_ratings")
