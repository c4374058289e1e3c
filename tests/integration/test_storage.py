"""The schema as the migrations build it, on SQLite and on PostgreSQL.

These tests never call ``create_all``: production databases are built by
``flask db upgrade``, so that is what is tested, including that the migrations still
match the models (a model change without a migration fails here).
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import flask_migrate
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from admin.models import AdminUser
from app import create_app
from device_test.models import DeviceTestResult
from ehr.models import (
    BackendTokenFailure,
    EhrEndpoint,
    EndpointCertificate,
    LaunchSession,
    LaunchState,
    SigningKey,
    WritebackOutbox,
)
from extensions import db
from hl7feed.models import Hl7AckCount, Hl7MessageReceipt
from notifications.models import SmsMessage, SmsOptEvent, SmsOptOut, SmsRecipient
from reports.models import (
    SmsReportDay,
    SmsReportState,
    UsageDayLanguages,
    UsageDaySums,
    UsageFactsState,
    UsageProviderDaySums,
    UsageVisitFacts,
)
from staff_sso.models import StaffIdentityLink
from tests.conftest import make_config
from visits.models import (
    Appointment,
    AuditLog,
    CallQualityDay,
    CallQualityRollup,
    CallQualitySample,
    CallQualityVisit,
    JoinLink,
    LiveSocket,
    LobbyEntry,
    Participant,
    PresenceEvent,
    ServerProcess,
)
from visits.ratings import VisitRating

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# Absolute, because the app's `directory="migrations"` is relative to the working directory.
MIGRATIONS = str(PROJECT_ROOT / "migrations")
T0 = datetime(2030, 3, 14, 15, 0, tzinfo=UTC)


@pytest.fixture
def app(tmp_path, database_url):
    """An app whose database was built by the real migrations (overrides conftest's app)."""
    application = create_app(make_config(tmp_path, DATABASE_URL=database_url))
    with application.app_context():
        flask_migrate.upgrade(directory=MIGRATIONS)
        yield application
        db.session.remove()
        db.engine.dispose()


# --- factories -----------------------------------------------------------------------

def make_endpoint(name: str = "clinic", **fields) -> EhrEndpoint:
    endpoint = EhrEndpoint(name=name, fhir_base_url=f"https://ehr.example.org/{name}/R4",
                           environment="test", client_id="vv-client", **fields)
    db.session.add(endpoint)
    return endpoint


def make_appointment(endpoint: EhrEndpoint, ehr_id: str = "appt-1", **fields) -> Appointment:
    fields = {"start_at": T0, "end_at": T0 + timedelta(minutes=30),
              "timezone": "America/Chicago", **fields}
    appointment = Appointment(endpoint=endpoint, ehr_appointment_id=ehr_id, **fields)
    db.session.add(appointment)
    return appointment


def make_participant(appointment: Appointment, role: str = "patient", **fields) -> Participant:
    participant = Participant(appointment=appointment, role=role, **fields)
    db.session.add(participant)
    return participant


def make_join_link(participant: Participant, token: str = "tok-1") -> JoinLink:
    link = JoinLink(participant=participant, token_hash=JoinLink.hash_token(token),
                    expires_at=T0 + timedelta(hours=2))
    db.session.add(link)
    return link


def make_receipt(endpoint: EhrEndpoint, sender: str = "EPIC^CLINIC",
                 control_id: str = "MSG0001") -> Hl7MessageReceipt:
    receipt = Hl7MessageReceipt(endpoint=endpoint, sender=sender, control_id=control_id,
                                message_type="SIU^S12", ack_code="AA")
    db.session.add(receipt)
    return receipt


def make_full_visit() -> Appointment:
    """One appointment with a row in every table that hangs off it."""
    endpoint = make_endpoint()
    appointment = make_appointment(endpoint, filler_id="F-1", placer_id="P-1",
                                   department_display="Family Medicine")
    patient = make_participant(appointment, "patient", ehr_user_id="Patient/p1", language="es")
    provider = make_participant(appointment, "provider", ehr_user_id="Practitioner/d1",
                                display_name="Dr. Example")
    make_join_link(patient)
    db.session.add_all([
        PresenceEvent(participant=patient, kind="connected", at=T0, process_id="node-a:123"),
        LobbyEntry(participant=patient, entered_at=T0, admitted_at=T0 + timedelta(minutes=1),
                   admitted_by=provider),
        CallQualitySample(participant=patient, at=T0, rtt_ms=42.5, jitter_ms=3.1,
                          packet_loss_pct=0.2, bitrate_in_kbps=900, bitrate_out_kbps=850),
        DeviceTestResult(appointment=appointment, participant=patient, overall="warn",
                         checks={"camera": {"status": "pass", "width": 1280},
                                 "connection": {"status": "warn", "rtt_ms": 310}},
                         user_agent_summary="Chrome 131 / Windows"),
        WritebackOutbox(endpoint=endpoint, appointment=appointment, resource_type="AuditEvent",
                        business_identifier="vv-participant-connected-1",
                        payload={"resourceType": "AuditEvent"}),
        SmsRecipient(participant=patient, phone_encrypted=b"\x00ciphertext",
                     phone_line_type="mobile", language="es"),
        SmsMessage(appointment=appointment, participant=patient, kind="reminder",
                   language="es", scheduled_for=T0 - timedelta(hours=1),
                   body_encrypted=b"\x01ciphertext"),
        ServerProcess(process_id="node-a:123", started_at=T0, heartbeat_at=T0),
        LiveSocket(sid="sid-1", participant=patient, process_id="node-a:123", connected_at=T0),
        LaunchSession(id_hash="a" * 64, endpoint=endpoint, appointment=appointment,
                      participant=provider, fhir_user="Practitioner/d1", patient_ref="Patient/p1",
                      access_token_encrypted=b"\x02ciphertext", scope="launch openid",
                      expires_at=T0 + timedelta(hours=1)),
    ])
    return appointment


def _count(model: type) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def _app_models() -> list[type]:
    """Every mapped class stored in the app's own database (not the sandbox's)."""
    app_tables = set(db.metadatas[None].tables.values())
    return [mapper.class_ for mapper in db.Model.registry.mappers
            if mapper.local_table in app_tables]


# --- the schema ----------------------------------------------------------------------

def test_upgrade_creates_exactly_the_model_tables(app):
    tables = set(sa.inspect(db.engine).get_table_names())

    assert tables == set(db.metadatas[None].tables) | {"alembic_version"}
    assert not tables & set(db.metadatas["sandbox"].tables)


def test_migrations_match_the_models(app):
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, db.metadatas[None])
        # Alembic does not compare CHECK constraints; compare their names ourselves.
        inspector = sa.inspect(connection)
        migrated_checks = {(table, check["name"]) for table in db.metadatas[None].tables
                           for check in inspector.get_check_constraints(table)}

    model_checks = {(table.name, constraint.name)
                    for table in db.metadatas[None].tables.values()
                    for constraint in table.constraints
                    if isinstance(constraint, sa.CheckConstraint)}
    assert differences == [], "models changed without a migration: flask db migrate"
    assert migrated_checks == model_checks


def test_downgrade_to_base_then_upgrade_again(app):
    flask_migrate.downgrade(directory=MIGRATIONS, revision="base")
    after_downgrade = set(sa.inspect(db.engine).get_table_names())
    flask_migrate.upgrade(directory=MIGRATIONS)
    after_upgrade = set(sa.inspect(db.engine).get_table_names())

    assert after_downgrade == {"alembic_version"}
    assert after_upgrade == set(db.metadatas[None].tables) | {"alembic_version"}


def test_cli_db_upgrade(tmp_path, database_url, monkeypatch):
    # The CLI as operators run it: from the project folder, default migrations directory.
    monkeypatch.chdir(PROJECT_ROOT)
    application = create_app(make_config(tmp_path, DATABASE_URL=database_url))

    result = application.test_cli_runner().invoke(args=["db", "upgrade"])

    assert result.exit_code == 0, result.output
    with application.app_context():
        assert "appointments" in sa.inspect(db.engine).get_table_names()
        db.engine.dispose()


# --- rows ----------------------------------------------------------------------------

def test_every_table_round_trips_a_row(app):
    appointment = make_full_visit()
    db.session.add_all([
        EndpointCertificate(endpoint=appointment.endpoint, subject="CN=Epic Interconnect",
                            fingerprint_sha256="ab" * 32, not_before=T0,
                            not_after=T0 + timedelta(days=365),
                            pem="-----BEGIN CERTIFICATE-----\n…"),
        SigningKey(kid="2030-03-k1", alg="RS384", private_key_encrypted=b"\x02ciphertext",
                   public_jwk={"kty": "RSA", "kid": "2030-03-k1", "n": "AQAB", "e": "AQAB"}),
        make_receipt(appointment.endpoint),
        SmsOptOut(phone_hash="cd" * 32, endpoint=appointment.endpoint),
        SmsOptEvent(change="opt_out", endpoint_id=appointment.endpoint.id, at=T0),
        AuditLog(actor="participant:1", action="admitted", target_type="participant",
                 target_id="1", detail={"lobby_seconds": 60}),
        StaffIdentityLink(endpoint=appointment.endpoint, ehr_user_id="Practitioner/p-1",
                          sso_issuer="https://login.example.org", sso_subject="staff-1"),
        AdminUser(username="it-admin", role="admin", password_hash="$argon2id$..."),
        BackendTokenFailure(endpoint=appointment.endpoint, at=T0,
                            error="TokenRefused invalid_client"),
    ])
    db.session.flush()
    db.session.add(LaunchState(state_hash="ef" * 32, endpoint_id=appointment.endpoint.id,
                               iss="https://fhir.example.org/r4",
                               launch_encrypted=b"\x03ciphertext", expires_at=T0))
    db.session.flush()
    db.session.add(CallQualityRollup(
        participant_id=appointment.participants[0].id, appointment_id=appointment.id,
        endpoint_id=appointment.endpoint.id, role="patient", first_at=T0, day=T0.date(),
        last_at=T0, samples=1, mos_b4=1))
    db.session.add(CallQualityDay(endpoint_id=appointment.endpoint.id, day=T0.date(),
                                  role="patient", browser_family="", os_family="", people=1))
    db.session.add(SmsReportDay(endpoint_id=appointment.endpoint.id, day=T0.date(),
                                kind="reminder", outcome="delivered", texts=3))
    db.session.add(SmsReportState(id=1, settled_through=T0.date()))
    db.session.add(Hl7AckCount(endpoint_id=appointment.endpoint.id, ack_code="AA", messages=2,
                               last_received_at=T0))
    db.session.add(CallQualityVisit(appointment_id=appointment.id,
                                    endpoint_id=appointment.endpoint.id, day=T0.date(),
                                    first_at=T0, people=1, mos_mean=4.2))
    db.session.add(VisitRating(appointment_id=appointment.id,
                               participant_id=appointment.participants[0].id, role="patient",
                               score=4))
    db.session.add(UsageVisitFacts(
        appointment_id=appointment.id, endpoint_id=appointment.endpoint.id, start_at=T0,
        end_at=T0 + timedelta(minutes=30), department="Cardiology", status="booked",
        patient_joined=True, provider_joined=True, provider_ehr_id="Practitioner/p-1",
        provider_name="Dr. Example", join_route="sms", language="es", device_test="pass"))
    db.session.add(UsageFactsState(id=1, settled_before=T0, sums_before=T0))
    db.session.add(UsageDaySums(endpoint_id=appointment.endpoint.id, day=T0.date(),
                                department="Cardiology", scheduled=1, wait_min=60.0,
                                wait_max=60.0, wait_b4=1))
    db.session.add(UsageProviderDaySums(endpoint_id=appointment.endpoint.id, day=T0.date(),
                                        department=None, provider_ehr_id="Practitioner/p-1",
                                        provider_name="Dr. Example", scheduled=1))
    db.session.add(UsageDayLanguages(endpoint_id=appointment.endpoint.id, day=T0.date(),
                                     department=None, language="es", patients=1))
    db.session.commit()
    db.session.expunge_all()

    assert {model.__name__ for model in _app_models() if _count(model) == 0} == set()
    endpoint = db.session.scalars(sa.select(EhrEndpoint)).one()
    assert (endpoint.site_timezone, endpoint.default_phone_region) == ("America/Chicago", "US")
    assert (endpoint.allowed_frame_ancestors, endpoint.sms_settings) == ([], {})
    assert (endpoint.link_valid_after_end_minutes, endpoint.lobby_opens_before_minutes) == (120, 30)
    assert endpoint.is_approved is False and endpoint.require_staff_sso is False
    loaded = db.session.scalars(sa.select(Appointment)).one()
    assert (loaded.status, loaded.filler_id, loaded.start_at) == ("booked", "F-1", T0)
    assert [p.role for p in loaded.participants] == ["patient", "provider"]
    patient = loaded.participants[0]
    assert patient.join_links[0].token_hash == JoinLink.hash_token("tok-1")
    assert patient.lobby_entries[0].admitted_by is loaded.participants[1]
    assert patient.sms_recipient.phone_encrypted == b"\x00ciphertext"
    assert patient.quality_samples[0].rtt_ms == 42.5
    result = db.session.scalars(sa.select(DeviceTestResult)).one()
    assert result.checks["connection"] == {"status": "warn", "rtt_ms": 310}
    key = db.session.scalars(sa.select(SigningKey)).one()
    assert key.public_jwk["kid"] == "2030-03-k1" and key.is_active
    outbox = db.session.scalars(sa.select(WritebackOutbox)).one()
    assert (outbox.status, outbox.attempts, outbox.appointment_id) == ("pending", 0, loaded.id)


def test_json_lists_track_in_place_changes(app):
    make_endpoint()
    db.session.commit()

    endpoint = db.session.scalars(sa.select(EhrEndpoint)).one()
    endpoint.allowed_frame_ancestors.append("https://ehr.example.org")
    endpoint.sms_settings["sender"] = "outbox"
    db.session.commit()
    db.session.expunge_all()

    endpoint = db.session.scalars(sa.select(EhrEndpoint)).one()
    assert endpoint.allowed_frame_ancestors == ["https://ehr.example.org"]
    assert endpoint.sms_settings == {"sender": "outbox"}


def test_datetimes_read_back_as_aware_utc(app):
    chicago = datetime(2030, 7, 1, 9, 30, tzinfo=ZoneInfo("America/Chicago"))
    appointment = make_appointment(make_endpoint(), start_at=chicago,
                                   end_at=chicago + timedelta(minutes=20))
    db.session.commit()
    appointment_id = appointment.id
    db.session.expunge_all()

    loaded = db.session.get(Appointment, appointment_id)
    assert loaded.start_at == chicago
    assert loaded.start_at.utcoffset() == timedelta(0)
    assert loaded.start_at.hour == 14
    assert loaded.created_at.tzinfo is not None
    # Comparisons in SQL order by instant, whatever zone the bound value is in.
    later_in_tokyo = (chicago + timedelta(minutes=1)).astimezone(ZoneInfo("Asia/Tokyo"))
    assert db.session.scalars(
        sa.select(Appointment.id).where(Appointment.start_at < later_in_tokyo)).all() == [loaded.id]


def test_naive_datetimes_are_refused(app):
    make_appointment(make_endpoint(), start_at=datetime(2030, 1, 1, 9, 0))

    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        db.session.commit()


# --- constraints ---------------------------------------------------------------------

def _duplicate_token_hash() -> None:
    participant = make_participant(make_appointment(make_endpoint()))
    make_join_link(participant, "same-token")
    make_join_link(participant, "same-token")


def _duplicate_hl7_control_id() -> None:
    endpoint = make_endpoint()
    make_receipt(endpoint, "EPIC^CLINIC", "MSG0001")
    make_receipt(endpoint, "EPIC^CLINIC", "MSG0001")


def _duplicate_appointment() -> None:
    endpoint = make_endpoint()
    make_appointment(endpoint, "appt-1")
    make_appointment(endpoint, "appt-1")


def _duplicate_writeback() -> None:
    endpoint = make_endpoint()
    for _ in range(2):
        db.session.add(WritebackOutbox(endpoint=endpoint, resource_type="Observation",
                                       business_identifier="vv-device-test-1", payload={}))


def _patient_display_name() -> None:
    make_participant(make_appointment(make_endpoint()), "patient", display_name="Jane Doe")


def _unknown_status() -> None:
    make_appointment(make_endpoint(), status="rescheduled")


def _appointment_without_any_ehr_id() -> None:
    make_appointment(make_endpoint(), ehr_id=None)


def _approver_without_time() -> None:
    make_endpoint(approved_by="admin")


@pytest.mark.parametrize("insert", [
    _duplicate_token_hash,
    _duplicate_hl7_control_id,
    _duplicate_appointment,
    _duplicate_writeback,
    _patient_display_name,
    _unknown_status,
    _appointment_without_any_ehr_id,
    _approver_without_time,
], ids=lambda insert: insert.__name__.strip("_"))
def test_database_refuses(app, insert):
    insert()

    with pytest.raises(sa.exc.IntegrityError):
        db.session.commit()


def test_same_ids_are_fine_in_a_different_scope(app):
    first, second = make_endpoint("first"), make_endpoint("second")
    make_receipt(first, "EPIC^CLINIC", "MSG0001")
    make_receipt(first, "LAB^CLINIC", "MSG0001")
    make_receipt(second, "EPIC^CLINIC", "MSG0001")
    make_appointment(first, "appt-1")
    make_appointment(second, "appt-1")
    make_appointment(first, None, filler_id="F-9")
    make_appointment(first, None, filler_id="F-10")

    db.session.commit()

    assert _count(Hl7MessageReceipt) == 3
    assert _count(Appointment) == 4


# --- deletes -------------------------------------------------------------------------

def test_deleting_an_appointment_removes_its_people_links_and_phones(app):
    appointment = make_full_visit()
    db.session.commit()

    db.session.delete(appointment)
    db.session.commit()

    for model in (Appointment, Participant, JoinLink, PresenceEvent, LobbyEntry,
                  CallQualitySample, SmsRecipient, SmsMessage):
        assert _count(model) == 0, model.__name__
    # Kept for reports and the EHR's audit trail, detached from the appointment.
    assert db.session.scalars(sa.select(DeviceTestResult.appointment_id)).all() == [None]
    assert db.session.scalars(sa.select(WritebackOutbox.appointment_id)).all() == [None]


def test_database_cascades_without_the_orm(app):
    make_full_visit()
    db.session.commit()
    appointment_id = db.session.scalar(sa.select(Appointment.id))
    db.session.remove()

    with db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # SQLite enforces foreign keys per connection, outside a transaction.
            connection.exec_driver_sql("PRAGMA foreign_keys = ON")
        connection.execute(sa.delete(Appointment).where(Appointment.id == appointment_id))
        connection.commit()

    for model in (Participant, JoinLink, PresenceEvent, LobbyEntry, CallQualitySample,
                  SmsRecipient, SmsMessage):
        assert _count(model) == 0, model.__name__
    assert db.session.scalars(sa.select(DeviceTestResult.appointment_id)).all() == [None]
    assert db.session.scalars(sa.select(WritebackOutbox.appointment_id)).all() == [None]
