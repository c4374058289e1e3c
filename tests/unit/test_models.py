"""Per-row behaviour of the models, without a database."""
from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.dialects import postgresql, sqlite

import device_test  # noqa: F401  (every package registers its models, as in create_app)
import ehr  # noqa: F401
import notifications  # noqa: F401
import visits  # noqa: F401
from ehr.models import EhrEndpoint, EndpointCertificate, SigningKey
from notifications.models import SmsMessage, SmsOptOut, SmsRecipient
from visits.models import (
    Appointment,
    AppointmentStatus,
    AuditLog,
    JoinLink,
    LobbyEntry,
    Participant,
    UTCDateTime,
    one_of,
)

T0 = datetime(2030, 3, 14, 15, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()],
                         ids=["sqlite", "postgresql"])
def test_utc_datetime_binds_aware_values_as_utc(dialect):
    chicago = datetime(2030, 7, 1, 9, 30, tzinfo=ZoneInfo("America/Chicago"))

    bound = UTCDateTime().process_bind_param(chicago, dialect)

    assert bound == chicago
    assert bound.tzinfo is timezone.utc


def test_utc_datetime_refuses_naive_values():
    with pytest.raises(ValueError, match="naive datetime"):
        UTCDateTime().process_bind_param(datetime(2030, 1, 1, 9, 0), sqlite.dialect())


@pytest.mark.parametrize("stored, expected", [
    (datetime(2030, 1, 1, 15, 0), T0.replace(month=1, day=1)),  # SQLite: naive UTC
    (datetime(2030, 1, 1, 9, 0, tzinfo=ZoneInfo("America/Chicago")),
     T0.replace(month=1, day=1)),  # PostgreSQL: the session's zone
    (None, None),
])
def test_utc_datetime_reads_back_aware_utc(stored, expected):
    loaded = UTCDateTime().process_result_value(stored, sqlite.dialect())

    assert loaded == expected
    assert loaded is None or loaded.tzinfo is timezone.utc


def test_one_of_checks_every_choice():
    constraint = one_of("status", AppointmentStatus)

    assert constraint.name == "status"
    assert str(constraint.sqltext) == (
        "status IN ('booked', 'arrived', 'fulfilled', 'cancelled', 'noshow')")


def test_join_links_store_a_sha256_of_the_token():
    token = "s3cret-token"

    stored = JoinLink.hash_token(token)

    assert stored == hashlib.sha256(b"s3cret-token").hexdigest()
    assert token not in stored


@pytest.mark.parametrize("revoked_at, now, usable", [
    (None, T0, True),
    (None, T0 + timedelta(hours=2), False),  # expiry is exclusive
    (T0 - timedelta(minutes=1), T0, False),
])
def test_join_link_usable_until_expired_or_revoked(revoked_at, now, usable):
    link = JoinLink(expires_at=T0 + timedelta(hours=2), revoked_at=revoked_at)

    assert link.is_usable_at(now) is usable


def test_endpoint_is_approved_once_approval_is_recorded():
    endpoint = EhrEndpoint(name="clinic")

    before = endpoint.is_approved
    endpoint.approved_by, endpoint.approved_at = "admin", T0

    assert (before, endpoint.is_approved) == (False, True)


def test_certificate_valid_between_its_dates():
    certificate = EndpointCertificate(not_before=T0, not_after=T0 + timedelta(days=1),
                                      fingerprint_sha256="ab" * 32)

    assert certificate.is_valid_at(T0 + timedelta(hours=1))
    assert not certificate.is_valid_at(T0 + timedelta(days=2))


def test_only_providers_are_staff():
    roles = ["patient", "provider", "interpreter", "guest"]

    staff = [role for role in roles if Participant(role=role).is_staff]

    assert staff == ["provider"]  # interpreters join by link and wait like guests


def test_lobby_entry_waits_until_admitted_or_left():
    entry = LobbyEntry(entered_at=T0)

    waiting = entry.is_waiting
    entry.admitted_at = T0 + timedelta(minutes=1)

    assert (waiting, entry.is_waiting) == (True, False)


PHI = ("Dr. Jane Roe", "Practitioner/jr-77", "+15551234567", "s3cret-token",
       JoinLink.hash_token("s3cret-token"), "cd" * 32, "Asthma")


@pytest.mark.parametrize("row", [
    Appointment(id=1, endpoint_id=2, status="booked", ehr_appointment_id="appt-9",
                department_display="Asthma"),
    Participant(id=3, appointment_id=1, role="provider", display_name="Dr. Jane Roe",
                ehr_user_id="Practitioner/jr-77"),
    JoinLink(id=4, participant_id=3, token_hash=JoinLink.hash_token("s3cret-token")),
    SmsRecipient(id=5, participant_id=3, phone_encrypted=b"+15551234567"),
    SmsMessage(id=6, appointment_id=1, kind="reminder", status="sent",
               body_encrypted=b"+15551234567"),
    SmsOptOut(id=7, phone_hash="cd" * 32),
    SigningKey(kid="k1", alg="RS384", private_key_encrypted=b"s3cret-token"),
    AuditLog(id=8, action="admitted", target_type="participant", target_id="3",
             actor="participant:3", detail={"name": "Dr. Jane Roe"}),
], ids=lambda row: type(row).__name__)
def test_repr_names_the_row_without_phi(row):
    text = repr(row)

    assert type(row).__name__ in text
    assert not [value for value in PHI if value in text]
