"""presence, launch sessions, outbox lease

Revision ID: 95e55be3b3f2
Revises: 1abffef9843a
Create Date: 2026-11-26 13:04:42

Live presence (participants.presence, live_sockets, server_processes), the SMART launch
sessions of providers, when a visit ended, and a lease on write-back rows so several
processes can share the outbox.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '95e55be3b3f2'
down_revision = '1abffef9843a'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('server_processes',
    sa.Column('process_id', sa.String(length=64), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('process_id', name=op.f('pk_server_processes'))
    )
    with op.batch_alter_table('server_processes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_server_processes_heartbeat_at'), ['heartbeat_at'], unique=False)

    op.create_table('launch_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('endpoint_id', sa.Integer(), nullable=False),
    sa.Column('appointment_id', sa.Integer(), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('fhir_user', sa.String(length=255), nullable=True),
    sa.Column('patient_ref', sa.String(length=255), nullable=True),
    sa.Column('encounter_ref', sa.String(length=255), nullable=True),
    sa.Column('access_token_encrypted', sa.LargeBinary(), nullable=True),
    sa.Column('scope', sa.Text(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['appointment_id'], ['appointments.id'], name=op.f('fk_launch_sessions_appointment_id_appointments'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['endpoint_id'], ['ehr_endpoints.id'], name=op.f('fk_launch_sessions_endpoint_id_ehr_endpoints'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_launch_sessions_participant_id_participants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id_hash', name=op.f('pk_launch_sessions'))
    )
    with op.batch_alter_table('launch_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_launch_sessions_appointment_id'), ['appointment_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_launch_sessions_endpoint_id'), ['endpoint_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_launch_sessions_participant_id'), ['participant_id'], unique=False)

    op.create_table('live_sockets',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('participant_id', sa.Integer(), nullable=False),
    sa.Column('process_id', sa.String(length=64), nullable=False),
    sa.Column('connected_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['participant_id'], ['participants.id'], name=op.f('fk_live_sockets_participant_id_participants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sid', name=op.f('pk_live_sockets'))
    )
    with op.batch_alter_table('live_sockets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_live_sockets_participant_id'), ['participant_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_live_sockets_process_id'), ['process_id'], unique=False)

    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True))

    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('presence', sa.String(length=16), nullable=False,
                                      server_default='never'))
        batch_op.add_column(sa.Column('presence_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('sockets_gone_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint(
            op.f('ck_participants_presence'),
            "presence IN ('never', 'connected', 'disconnected')")

    with op.batch_alter_table('writeback_outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('writeback_outbox', schema=None) as batch_op:
        batch_op.drop_column('locked_until')

    with op.batch_alter_table('participants', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_participants_presence'), type_='check')
        batch_op.drop_column('sockets_gone_at')
        batch_op.drop_column('presence_since')
        batch_op.drop_column('presence')

    with op.batch_alter_table('appointments', schema=None) as batch_op:
        batch_op.drop_column('ended_at')

    with op.batch_alter_table('live_sockets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_live_sockets_process_id'))
        batch_op.drop_index(batch_op.f('ix_live_sockets_participant_id'))

    op.drop_table('live_sockets')
    with op.batch_alter_table('launch_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_launch_sessions_participant_id'))
        batch_op.drop_index(batch_op.f('ix_launch_sessions_endpoint_id'))
        batch_op.drop_index(batch_op.f('ix_launch_sessions_appointment_id'))

    op.drop_table('launch_sessions')
    with op.batch_alter_table('server_processes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_server_processes_heartbeat_at'))

    op.drop_table('server_processes')
