"""call quality and texts reports: MOS, TURN and browser family per sample, a per-person
rollup, opt-out/opt-in events, indexes

Revision ID: a9d4c2e7f318
Revises: a4d9e2b7c316
Create Date: 2026-12-04 23:45:00

Issue 12 ("Reports for the clinic"), call quality and texts. Each call-quality sample
gains its estimated MOS, whether it went through TURN, and the browser's coarse browser
and OS families (never the User-Agent). ``call_quality_rollups`` sums the samples per
participant as they arrive, so the report reads a row per person in a call, not the 10-s
samples; ``ix_call_quality_samples_at`` serves the retention purge. ``sms_opt_events``
counts STOP and START over time (an opt-in deletes the opt-out row); the opt-outs kept so
far are copied in as events at their time. ``ix_sms_messages_scheduled_for`` serves "texts
due in these days". Samples stored before this revision are not summed (they have no MOS).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "a9d4c2e7f318"
down_revision = "a4d9e2b7c316"
branch_labels = None
depends_on = None

_METRICS = ("rtt", "jitter", "loss", "bitrate", "mos")


def _count(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer(), nullable=False, server_default="0")


def upgrade() -> None:
    with op.batch_alter_table("call_quality_samples", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mos", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("relayed", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("browser_family", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("os_family", sa.String(length=24), nullable=True))
        batch_op.create_index("ix_call_quality_samples_at", ["at"], unique=False)
    columns = []
    for metric in _METRICS:
        columns.append(sa.Column(f"{metric}_sum", sa.Float(), nullable=False,
                                 server_default="0"))
        columns.append(_count(f"{metric}_n"))
    for metric in _METRICS:
        columns.extend(_count(f"{metric}_b{index}") for index in range(5))
    op.create_table(
        "call_quality_rollups",
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("browser_family", sa.String(length=24), nullable=True),
        sa.Column("os_family", sa.String(length=24), nullable=True),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        _count("samples"), _count("poor"), _count("relayed"),
        *columns,
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"],
                                name=op.f("fk_call_quality_rollups_participant_id_participants"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"],
                                name=op.f("fk_call_quality_rollups_appointment_id_appointments"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("participant_id", name=op.f("pk_call_quality_rollups")),
    )
    with op.batch_alter_table("call_quality_rollups", schema=None) as batch_op:
        batch_op.create_index("ix_call_quality_rollups_endpoint_id_first_at",
                              ["endpoint_id", "first_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_call_quality_rollups_appointment_id"),
                              ["appointment_id"], unique=False)
    op.create_table(
        "sms_opt_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("change IN ('opt_out', 'opt_in')",
                           name=op.f("ck_sms_opt_events_change")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"],
                                name=op.f("fk_sms_opt_events_endpoint_id_ehr_endpoints"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_opt_events")),
    )
    with op.batch_alter_table("sms_opt_events", schema=None) as batch_op:
        batch_op.create_index("ix_sms_opt_events_at", ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sms_opt_events_endpoint_id"), ["endpoint_id"],
                              unique=False)
    op.execute("INSERT INTO sms_opt_events (change, endpoint_id, at) "
               "SELECT 'opt_out', endpoint_id, created_at FROM sms_opt_outs")
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.create_index("ix_sms_messages_scheduled_for", ["scheduled_for"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("sms_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_sms_messages_scheduled_for")
    with op.batch_alter_table("sms_opt_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_sms_opt_events_endpoint_id"))
        batch_op.drop_index("ix_sms_opt_events_at")
    op.drop_table("sms_opt_events")
    with op.batch_alter_table("call_quality_rollups", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_quality_rollups_appointment_id"))
        batch_op.drop_index("ix_call_quality_rollups_endpoint_id_first_at")
    op.drop_table("call_quality_rollups")
    with op.batch_alter_table("call_quality_samples", schema=None) as batch_op:
        batch_op.drop_index("ix_call_quality_samples_at")
        batch_op.drop_column("os_family")
        batch_op.drop_column("browser_family")
        batch_op.drop_column("relayed")
        batch_op.drop_column("mos")
