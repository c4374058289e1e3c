"""EHR rows: the endpoints we trust, our signing keys, write-backs waiting to go.

Nothing here names a patient. Write-back payloads reference FHIR ids (Patient/…,
Appointment/…), and outbox errors are kept short and free of response bodies.
"""
from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.mutable import MutableDict, MutableList
from sqlalchemy.orm import Mapped, backref, mapped_column, relationship

from extensions import db
from visits.models import UTCDateTime, one_of, utcnow

if TYPE_CHECKING:
    from visits.models import Appointment, Participant


class Environment(enum.StrEnum):
    TEST = "test"
    PRODUCTION = "production"


class WritebackResource(enum.StrEnum):
    AUDIT_EVENT = "AuditEvent"
    OBSERVATION = "Observation"


class WritebackStatus(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class EhrEndpoint(db.Model):
    """A SMART on FHIR server we accept launches and HL7 from, once an admin approves it.

    ``name`` is the slug in ``/hl7/v2/<name>``; ``fhir_base_url`` is the SMART ``iss``.
    """

    __tablename__ = "ehr_endpoints"
    __table_args__ = (
        one_of("environment", Environment),
        # Approval is one act: an approver without a time (or the reverse) is a bug.
        sa.CheckConstraint("(approved_by IS NULL) = (approved_at IS NULL)",
                           name="approval_complete"),
        sa.CheckConstraint("link_valid_after_end_minutes >= 0",
                           name="link_valid_after_end_minutes"),
        sa.CheckConstraint("lobby_opens_before_minutes >= 0", name="lobby_opens_before_minutes"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)
    fhir_base_url: Mapped[str] = mapped_column(sa.String(500), unique=True)
    environment: Mapped[str] = mapped_column(sa.String(16))
    client_id: Mapped[str] = mapped_column(sa.String(200))
    # Epic registers the patient-facing (MyChart) app separately from the clinicians' one;
    # NULL: portal launches use ``client_id`` too.
    patient_client_id: Mapped[str | None] = mapped_column(sa.String(200))
    # Space-separated, as sent in the authorize request.
    scopes: Mapped[str] = mapped_column(sa.Text, default="")
    approved_by: Mapped[str | None] = mapped_column(sa.String(200))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Origins allowed to frame our pages (CSP frame-ancestors), e.g. the EHR's web client.
    allowed_frame_ancestors: Mapped[list[str]] = mapped_column(
        MutableList.as_mutable(sa.JSON), default=list)
    site_timezone: Mapped[str] = mapped_column(sa.String(64), default="America/Chicago")
    # ISO 3166 region for reading phone numbers written without a country code.
    default_phone_region: Mapped[str] = mapped_column(sa.String(2), default="US")
    # Sender choice, templates, reminder offsets; never credentials (those are env vars).
    sms_settings: Mapped[dict[str, Any]] = mapped_column(
        MutableDict.as_mutable(sa.JSON), default=dict)
    link_valid_after_end_minutes: Mapped[int] = mapped_column(default=120)
    lobby_opens_before_minutes: Mapped[int] = mapped_column(default=30)
    # The clinic's phone number as patients should dial it (shown in the waiting room once
    # the visit is late, and on the pages for a link that no longer works); NULL: unknown.
    clinic_phone: Mapped[str | None] = mapped_column(sa.String(40))
    # Staff must have signed in once with the organization's OpenID provider (staff_sso)
    # before a launch from this EHR opens a visit; off unless an admin turns it on.
    require_staff_sso: Mapped[bool] = mapped_column(default=False,
                                                    server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    certificates: Mapped[list[EndpointCertificate]] = relationship(
        back_populates="endpoint", cascade="all, delete-orphan")

    def launch_client_id(self, *, patient: bool) -> str:
        """The client id a launch presents: the portal's own when one is registered."""
        return (self.patient_client_id or self.client_id) if patient else self.client_id

    @property
    def is_approved(self) -> bool:
        """Launches and HL7 from an endpoint are refused until an admin approves it."""
        return self.approved_at is not None

    def __repr__(self) -> str:
        return f"<EhrEndpoint {self.id} {self.name!r} {self.environment}>"


class EndpointCertificate(db.Model):
    """A certificate an endpoint signs HL7 bodies with; several overlap during rotation."""

    __tablename__ = "endpoint_certificates"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "fingerprint_sha256",
                            name="uq_endpoint_certificates_endpoint_id_fingerprint_sha256"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(sa.String(500))
    # Lowercase hex of the DER's SHA-256.
    fingerprint_sha256: Mapped[str] = mapped_column(sa.String(64))
    not_before: Mapped[datetime] = mapped_column(UTCDateTime())
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    pem: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    endpoint: Mapped[EhrEndpoint] = relationship(back_populates="certificates")

    def is_valid_at(self, now: datetime) -> bool:
        return self.not_before <= now <= self.not_after

    def __repr__(self) -> str:
        return (f"<EndpointCertificate {self.id} endpoint={self.endpoint_id} "
                f"sha256={self.fingerprint_sha256[:12]}…>")


class SigningKey(db.Model):
    """One of our private_key_jwt keys. Retired keys stay published until tokens signed
    with them can no longer be in flight."""

    __tablename__ = "signing_keys"

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(sa.String(64), unique=True)
    alg: Mapped[str] = mapped_column(sa.String(16))
    # Encrypted with a key derived from SECRET_KEY; a database dump alone cannot sign.
    private_key_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    @property
    def is_active(self) -> bool:
        return self.retired_at is None

    def __repr__(self) -> str:
        return f"<SigningKey {self.kid!r} {self.alg} active={self.is_active}>"


class WritebackOutbox(db.Model):
    """A FHIR resource to create in the EHR, kept until it is acknowledged.

    ``business_identifier`` goes into ``If-None-Exist``, so a retry after a lost reply
    cannot create a second AuditEvent or Observation; it is unique per endpoint so we
    never queue the same fact twice either.
    """

    __tablename__ = "writeback_outbox"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "business_identifier",
                            name="uq_writeback_outbox_endpoint_id_business_identifier"),
        # The worker asks "pending and due"; this index answers it.
        sa.Index("ix_writeback_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        # ... and, for each EHR with free delivery slots, "its next due rows".
        sa.Index("ix_writeback_outbox_endpoint_id_status_next_attempt_at",
                 "endpoint_id", "status", "next_attempt_at"),
        one_of("resource_type", WritebackResource),
        one_of("status", WritebackStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("ehr_endpoints.id"))
    # SET NULL: the payload is self-contained, and purging an appointment must not
    # drop the audit trail still owed to the EHR.
    appointment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="SET NULL"), index=True)
    resource_type: Mapped[str] = mapped_column(sa.String(32))
    business_identifier: Mapped[str] = mapped_column(sa.String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(16), default=WritebackStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=utcnow)
    # HTTP status and an OperationOutcome code at most; response bodies may echo PHI.
    last_error: Mapped[str | None] = mapped_column(sa.String(500))
    # The id the EHR gave the created resource.
    remote_id: Mapped[str | None] = mapped_column(sa.String(200))
    # A worker that claimed the row holds it until then; another process may take it
    # over afterwards (the claimer died). If-None-Exist makes a double send harmless.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # The server process holding the claim (``server_processes.process_id``); with
    # ``attempts`` it names the claim, so only the attempt that holds it records a result.
    # A dead claimer's rows come due again when ``locked_until`` passes.
    claimed_by: Mapped[str | None] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    endpoint: Mapped[EhrEndpoint] = relationship()
    # The backref lives here so visits/ does not depend on ehr/; without delete cascade
    # the ORM nulls appointment_id itself when the appointment goes.
    appointment: Mapped[Appointment | None] = relationship(backref=backref("writebacks"))

    def __repr__(self) -> str:
        return (f"<WritebackOutbox {self.id} {self.resource_type} endpoint={self.endpoint_id} "
                f"status={self.status} attempts={self.attempts}>")


class LaunchSession(db.Model):
    """What a completed SMART launch left us: who launched which visit, and the EHR's
    access token to read the patient's name live (encrypted; never the name itself).

    The browser holds only a random session id; its SHA-256 is the primary key."""

    __tablename__ = "launch_sessions"

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="CASCADE"), index=True)
    appointment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="CASCADE"), index=True)
    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    # FHIR references from the launch context, e.g. "Practitioner/abc", "Patient/123".
    fhir_user: Mapped[str | None] = mapped_column(sa.String(255))
    patient_ref: Mapped[str | None] = mapped_column(sa.String(255))
    encounter_ref: Mapped[str | None] = mapped_column(sa.String(255))
    access_token_encrypted: Mapped[bytes | None] = mapped_column(sa.LargeBinary)
    scope: Mapped[str] = mapped_column(sa.Text, default="")
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # One-way: ON DELETE CASCADE removes sessions with their appointment or participant.
    endpoint: Mapped[EhrEndpoint] = relationship()
    appointment: Mapped[Appointment] = relationship()
    participant: Mapped[Participant] = relationship()

    def __repr__(self) -> str:
        return (f"<LaunchSession appointment={self.appointment_id} "
                f"participant={self.participant_id}>")


class LaunchState(db.Model):
    """A provider launch sent to the EHR's sign-in and not yet back, by the SHA-256 of its
    OAuth ``state``.

    The browser's session cookie holds the launch itself (PKCE verifier, nonce), which
    binds the answer to the browser that asked. This row only lets ``/launch/callback``
    tell a browser that did not keep the cookie (a third-party cookie blocked inside the
    EHR's frame) from an unknown or replayed state, and offer to start the same launch
    in a window of its own: for that it keeps the EHR's ``iss`` and ``launch`` value
    (encrypted). Single use; rows past ``expires_at`` are deleted as later launches
    begin."""

    __tablename__ = "launch_states"

    state_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="CASCADE"), index=True)
    iss: Mapped[str] = mapped_column(sa.Text)
    launch_encrypted: Mapped[bytes] = mapped_column(sa.LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)

    def __repr__(self) -> str:
        return f"<LaunchState endpoint={self.endpoint_id} expires={self.expires_at:%H:%M:%S}>"


class BackendTokenFailure(db.Model):
    """One backend-services token request for write-backs that failed, for the integration
    health report: when, and the error's class (an HTTP status, an OAuth error code),
    never a response body. Rows older than ``TOKEN_FAILURE_RETENTION_DAYS`` are pruned
    as new ones are written."""

    __tablename__ = "backend_token_failures"
    __table_args__ = (
        sa.Index("ix_backend_token_failures_endpoint_id_at", "endpoint_id", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(
        sa.ForeignKey("ehr_endpoints.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    error: Mapped[str] = mapped_column(sa.String(120))

    endpoint: Mapped[EhrEndpoint] = relationship()

    def __repr__(self) -> str:
        return f"<BackendTokenFailure endpoint={self.endpoint_id} at={self.at} {self.error!r}>"
