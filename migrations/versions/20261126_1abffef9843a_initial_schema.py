"""initial schema: endpoints, appointments and participants, SMS, write-backs, audit

Revision ID: 1abffef9843a
Revises:
Create Date: 2026-11-26 12:50:00

No patient names, birth dates or diagnoses anywhere: participants carry a display name
only when they are providers (CHECK), join links only a token hash, phones and SMS
bodies only ciphertext, opt-outs only an HMAC.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "1abffef9843a"
down_revision = None
branch_labels = None
depends_on = None

# Names are wrapped in op.f() so the naming convention in extensions.py does not prefix
# them a second time (it would turn "ck_participants_role" into "ck_participants_ck_...").
# TIMESTAMP is UTCDateTime in the models: timestamptz on PostgreSQL, UTC wall time on SQLite.
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    # --- EHR endpoints and what hangs off them (ehr/models.py) ---
    op.create_table(
        "ehr_endpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("fhir_base_url", sa.String(500), nullable=False),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("client_id", sa.String(200), nullable=False),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=True),
        sa.Column("approved_at", TIMESTAMP, nullable=True),
        sa.Column("allowed_frame_ancestors", sa.JSON(), nullable=False),
        sa.Column("site_timezone", sa.String(64), nullable=False),
        sa.Column("default_phone_region", sa.String(2), nullable=False),
        sa.Column("sms_settings", sa.JSON(), nullable=False),
        sa.Column("link_valid_after_end_minutes", sa.Integer(), nullable=False),
        sa.Column("lobby_opens_before_minutes", sa.Integer(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ehr_endpoints")),
        sa.UniqueConstraint("name", name=op.f("uq_ehr_endpoints_name")),
        sa.UniqueConstraint("fhir_base_url", name=op.f("uq_ehr_endpoints_fhir_base_url")),
        sa.CheckConstraint("environment IN ('test', 'production')",
                           name=op.f("ck_ehr_endpoints_environment")),
        sa.CheckConstraint("(approved_by IS NULL) = (approved_at IS NULL)",
                           name=op.f("ck_ehr_endpoints_approval_complete")),
        sa.CheckConstraint("link_valid_after_end_minutes >= 0",
                           name=op.f("ck_ehr_endpoints_link_valid_after_end_minutes")),
        sa.CheckConstraint("lobby_opens_before_minutes >= 0",
                           name=op.f("ck_ehr_endpoints_lobby_opens_before_minutes")),
    )

    op.create_table(
        "endpoint_certificates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(500), nullable=False),
        sa.Column("fingerprint_sha256", sa.String(64), nullable=False),
        sa.Column("not_before", TIMESTAMP, nullable=False),
        sa.Column("not_after", TIMESTAMP, nullable=False),
        sa.Column("pem", sa.Text(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_endpoint_certificates")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"], ondelete="CASCADE",
                                name=op.f("fk_endpoint_certificates_endpoint_id_ehr_endpoints")),
        sa.UniqueConstraint("endpoint_id", "fingerprint_sha256",
                            name=op.f("uq_endpoint_certificates_endpoint_id_fingerprint_sha256")),
    )

    op.create_table(
        "signing_keys",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("private_key_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("public_jwk", sa.JSON(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("retired_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signing_keys")),
        sa.UniqueConstraint("kid", name=op.f("uq_signing_keys_kid")),
    )

    op.create_table(
        "hl7_message_receipts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("sender", sa.String(200), nullable=False),
        sa.Column("control_id", sa.String(199), nullable=False),
        sa.Column("message_type", sa.String(32), nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hl7_message_receipts")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"], ondelete="CASCADE",
                                name=op.f("fk_hl7_message_receipts_endpoint_id_ehr_endpoints")),
        # Duplicate control ids are acknowledged once and applied once.
        sa.UniqueConstraint("endpoint_id", "sender", "control_id",
                            name=op.f("uq_hl7_message_receipts_endpoint_id_sender_control_id")),
        sa.CheckConstraint("ack_code IN ('AA', 'AE', 'AR')",
                           name=op.f("ck_hl7_message_receipts_ack_code")),
    )

    # --- The visit domain (visits/models.py) ---
    op.create_table(
        "appointments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("ehr_appointment_id", sa.String(128), nullable=True),
        sa.Column("placer_id", sa.String(128), nullable=True),
        sa.Column("filler_id", sa.String(128), nullable=True),
        sa.Column("start_at", TIMESTAMP, nullable=False),
        sa.Column("end_at", TIMESTAMP, nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("department_display", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_message_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointments")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"],
                                name=op.f("fk_appointments_endpoint_id_ehr_endpoints")),
        sa.UniqueConstraint("endpoint_id", "ehr_appointment_id",
                            name=op.f("uq_appointments_endpoint_id_ehr_appointment_id")),
        sa.CheckConstraint(
            "status IN ('booked', 'arrived', 'fulfilled', 'cancelled', 'noshow')",
            name=op.f("ck_appointments_status")),
        sa.CheckConstraint(
            "ehr_appointment_id IS NOT NULL OR filler_id IS NOT NULL OR placer_id IS NOT NULL",
            name=op.f("ck_appointments_has_ehr_id")),
    )
    op.create_index(op.f("ix_appointments_endpoint_id_filler_id"), "appointments",
                    ["endpoint_id", "filler_id"])
    op.create_index(op.f("ix_appointments_endpoint_id_placer_id"), "appointments",
                    ["endpoint_id", "placer_id"])
    op.create_index(op.f("ix_appointments_start_at"), "appointments", ["start_at"])

    op.create_table(
        "participants",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("ehr_user_id", sa.String(255), nullable=True),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("admitted_at", TIMESTAMP, nullable=True),
        sa.Column("left_at", TIMESTAMP, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_participants")),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"], ondelete="CASCADE",
                                name=op.f("fk_participants_appointment_id_appointments")),
        sa.UniqueConstraint("appointment_id", "ehr_user_id",
                            name=op.f("uq_participants_appointment_id_ehr_user_id")),
        sa.CheckConstraint("role IN ('patient', 'provider', 'interpreter', 'guest')",
                           name=op.f("ck_participants_role")),
        # Patient names are read live from FHIR, never stored.
        sa.CheckConstraint("display_name IS NULL OR role = 'provider'",
                           name=op.f("ck_participants_display_name_provider_only")),
    )

    op.create_table(
        "join_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=True),
        sa.Column("last_used_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_join_links")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="CASCADE",
                                name=op.f("fk_join_links_participant_id_participants")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_join_links_token_hash")),
    )
    op.create_index(op.f("ix_join_links_participant_id"), "join_links", ["participant_id"])

    op.create_table(
        "presence_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("process_id", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presence_events")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="CASCADE",
                                name=op.f("fk_presence_events_participant_id_participants")),
        sa.CheckConstraint("kind IN ('connected', 'disconnected')",
                           name=op.f("ck_presence_events_kind")),
    )
    op.create_index(op.f("ix_presence_events_participant_id_at"), "presence_events",
                    ["participant_id", "at"])

    op.create_table(
        "lobby_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("entered_at", TIMESTAMP, nullable=False),
        sa.Column("admitted_at", TIMESTAMP, nullable=True),
        sa.Column("admitted_by_participant_id", sa.Integer(), nullable=True),
        sa.Column("left_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lobby_entries")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="CASCADE",
                                name=op.f("fk_lobby_entries_participant_id_participants")),
        sa.ForeignKeyConstraint(
            ["admitted_by_participant_id"], ["participants.id"], ondelete="SET NULL",
            name=op.f("fk_lobby_entries_admitted_by_participant_id_participants")),
    )
    op.create_index(op.f("ix_lobby_entries_participant_id"), "lobby_entries", ["participant_id"])
    op.create_index(op.f("ix_lobby_entries_admitted_by_participant_id"), "lobby_entries",
                    ["admitted_by_participant_id"])

    op.create_table(
        "call_quality_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("rtt_ms", sa.Float(), nullable=True),
        sa.Column("jitter_ms", sa.Float(), nullable=True),
        sa.Column("packet_loss_pct", sa.Float(), nullable=True),
        sa.Column("bitrate_in_kbps", sa.Float(), nullable=True),
        sa.Column("bitrate_out_kbps", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_quality_samples")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="CASCADE",
                                name=op.f("fk_call_quality_samples_participant_id_participants")),
    )
    op.create_index(op.f("ix_call_quality_samples_participant_id_at"), "call_quality_samples",
                    ["participant_id", "at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target_type", sa.String(64), nullable=True),
        sa.Column("target_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_at"), "audit_log", ["at"])
    op.create_index(op.f("ix_audit_log_target_type_target_id"), "audit_log",
                    ["target_type", "target_id"])

    # --- EHR write-backs (ehr/models.py), after appointments which they refer to ---
    op.create_table(
        "writeback_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=True),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("business_identifier", sa.String(200), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("remote_id", sa.String(200), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_writeback_outbox")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"],
                                name=op.f("fk_writeback_outbox_endpoint_id_ehr_endpoints")),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"], ondelete="SET NULL",
                                name=op.f("fk_writeback_outbox_appointment_id_appointments")),
        # The If-None-Exist identifier: one write-back per fact per endpoint.
        sa.UniqueConstraint("endpoint_id", "business_identifier",
                            name=op.f("uq_writeback_outbox_endpoint_id_business_identifier")),
        sa.CheckConstraint("resource_type IN ('AuditEvent', 'Observation')",
                           name=op.f("ck_writeback_outbox_resource_type")),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')",
                           name=op.f("ck_writeback_outbox_status")),
    )
    op.create_index(op.f("ix_writeback_outbox_appointment_id"), "writeback_outbox",
                    ["appointment_id"])
    op.create_index(op.f("ix_writeback_outbox_status_next_attempt_at"), "writeback_outbox",
                    ["status", "next_attempt_at"])

    # --- Device tests (device_test/models.py) ---
    op.create_table(
        "device_test_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=True),
        sa.Column("participant_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("overall", sa.String(8), nullable=False),
        sa.Column("checks", sa.JSON(), nullable=False),
        sa.Column("user_agent_summary", sa.String(120), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_test_results")),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"], ondelete="SET NULL",
                                name=op.f("fk_device_test_results_appointment_id_appointments")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="SET NULL",
                                name=op.f("fk_device_test_results_participant_id_participants")),
        sa.CheckConstraint("overall IN ('pass', 'warn', 'fail')",
                           name=op.f("ck_device_test_results_overall")),
    )
    op.create_index(op.f("ix_device_test_results_appointment_id"), "device_test_results",
                    ["appointment_id"])
    op.create_index(op.f("ix_device_test_results_participant_id"), "device_test_results",
                    ["participant_id"])

    # --- SMS (notifications/models.py) ---
    op.create_table(
        "sms_recipients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=False),
        sa.Column("phone_encrypted", sa.LargeBinary(), nullable=False),
        sa.Column("phone_line_type", sa.String(32), nullable=True),
        sa.Column("language", sa.String(16), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_recipients")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="CASCADE",
                                name=op.f("fk_sms_recipients_participant_id_participants")),
        sa.UniqueConstraint("participant_id", name=op.f("uq_sms_recipients_participant_id")),
    )

    op.create_table(
        "sms_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appointment_id", sa.Integer(), nullable=False),
        sa.Column("participant_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("language", sa.String(16), nullable=False),
        sa.Column("scheduled_for", TIMESTAMP, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body_encrypted", sa.LargeBinary(), nullable=True),
        sa.Column("provider_message_id", sa.String(64), nullable=True),
        sa.Column("sent_at", TIMESTAMP, nullable=True),
        sa.Column("status_updated_at", TIMESTAMP, nullable=True),
        sa.Column("error_code", sa.String(32), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_messages")),
        sa.ForeignKeyConstraint(["appointment_id"], ["appointments.id"], ondelete="CASCADE",
                                name=op.f("fk_sms_messages_appointment_id_appointments")),
        sa.ForeignKeyConstraint(["participant_id"], ["participants.id"], ondelete="SET NULL",
                                name=op.f("fk_sms_messages_participant_id_participants")),
        sa.CheckConstraint(
            "kind IN ('confirmation', 'reschedule', 'cancellation', 'reminder')",
            name=op.f("ck_sms_messages_kind")),
        sa.CheckConstraint(
            "status IN ('scheduled', 'sent', 'delivered', 'failed', 'cancelled', 'suppressed')",
            name=op.f("ck_sms_messages_status")),
    )
    op.create_index(op.f("ix_sms_messages_appointment_id"), "sms_messages", ["appointment_id"])
    op.create_index(op.f("ix_sms_messages_participant_id"), "sms_messages", ["participant_id"])
    op.create_index(op.f("ix_sms_messages_provider_message_id"), "sms_messages",
                    ["provider_message_id"])
    op.create_index(op.f("ix_sms_messages_status_scheduled_for"), "sms_messages",
                    ["status", "scheduled_for"])

    op.create_table(
        "sms_opt_outs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("phone_hash", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.Integer(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sms_opt_outs")),
        sa.ForeignKeyConstraint(["endpoint_id"], ["ehr_endpoints.id"], ondelete="SET NULL",
                                name=op.f("fk_sms_opt_outs_endpoint_id_ehr_endpoints")),
        sa.UniqueConstraint("phone_hash", name=op.f("uq_sms_opt_outs_phone_hash")),
    )
    op.create_index(op.f("ix_sms_opt_outs_endpoint_id"), "sms_opt_outs", ["endpoint_id"])


def downgrade() -> None:
    # Children before parents; dropping a table drops its indexes and constraints.
    for table in (
        "sms_opt_outs",
        "sms_messages",
        "sms_recipients",
        "device_test_results",
        "writeback_outbox",
        "audit_log",
        "call_quality_samples",
        "lobby_entries",
        "presence_events",
        "join_links",
        "participants",
        "appointments",
        "hl7_message_receipts",
        "signing_keys",
        "endpoint_certificates",
        "ehr_endpoints",
    ):
        op.drop_table(table)
