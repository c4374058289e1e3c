"""Rows of the visit domain: appointments, who takes part, how they got in, what happened.

We keep the least we can (DESIGN.md, "Data and what we keep"): no patient names, birth
dates or diagnoses. A participant's display name is stored for providers only, and a
CHECK constraint enforces it so no code path can slip a patient's name in. Join links
are stored as a SHA-256 hash; the token itself exists only in the text message.

The column helpers at the top (``UTCDateTime``, ``utcnow``, ``one_of``) are shared by the
models of ``ehr``, ``device_test`` and ``notifications``.
"""
from __future__ import annotations

import enum
import hashlib
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from extensions import db

if TYPE_CHECKING:
    from ehr.models import EhrEndpoint


def utcnow() -> datetime:
    """The current time as an aware UTC datetime, the only kind the database accepts."""
    return datetime.now(timezone.utc)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is aware UTC when written and when read, on every backend.

    PostgreSQL stores ``timestamptz`` and returns values in the session's time zone;
    SQLite has no time zone type and returns naive values. Binding converts to UTC (so
    SQLite stores the UTC wall time and string comparison still orders correctly);
    reading marks naive values as UTC. Naive input is refused: whether it meant UTC or
    the clinic's local time cannot be known, and guessing shifts visits by hours.
    """

    impl = sa.DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; use an aware one (UTC)")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def one_of(column: str, choices: type[enum.StrEnum]) -> sa.CheckConstraint:
    """CHECK that ``column`` holds one of ``choices``.

    A VARCHAR plus CHECK behaves the same on SQLite and PostgreSQL, and adding a value
    later is an ordinary batch migration rather than PostgreSQL's ``ALTER TYPE``. The
    constraint is named after the column: ``ck_<table>_<column>``.
    """
    values = ", ".join(f"'{choice.value}'" for choice in choices)
    return sa.CheckConstraint(f"{column} IN ({values})", name=column)


class AppointmentStatus(enum.StrEnum):
    BOOKED = "booked"
    ARRIVED = "arrived"
    FULFILLED = "fulfilled"
    CANCELLED = "cancelled"
    NOSHOW = "noshow"


class ParticipantRole(enum.StrEnum):
    PATIENT = "patient"
    PROVIDER = "provider"
    INTERPRETER = "interpreter"
    GUEST = "guest"


class JoinRoute(enum.StrEnum):
    """How a participant last opened their visit, for the usage report."""

    SMS = "sms"          # a patient's personal link (sent by text message)
    MYCHART = "mychart"  # the patient portal's launch
    GUEST = "guest"      # a guest's or interpreter's personal link


class PresenceKind(enum.StrEnum):
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class PresenceState(enum.StrEnum):
    NEVER = "never"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class Appointment(db.Model):
    """A scheduled visit as the EHR knows it, by id only: no reason, no diagnosis.

    ``ehr_appointment_id`` is the FHIR Appointment id. An appointment first heard of
    through HL7 may only have placer/filler ids until the FHIR id is known, so each of
    the three may be missing, but not all of them: a row we cannot match to the EHR
    again could never be updated or cancelled.
    """

    __tablename__ = "appointments"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "ehr_appointment_id",
                            name="uq_appointments_endpoint_id_ehr_appointment_id"),
        sa.Index("ix_appointments_endpoint_id_filler_id", "endpoint_id", "filler_id"),
        sa.Index("ix_appointments_endpoint_id_placer_id", "endpoint_id", "placer_id"),
        # Reports: an endpoint's visits over a range of days; one department's visits.
        sa.Index("ix_appointments_endpoint_id_start_at", "endpoint_id", "start_at"),
        sa.Index("ix_appointments_endpoint_id_department_display", "endpoint_id",
                 "department_display"),
        sa.CheckConstraint(
            "ehr_appointment_id IS NOT NULL OR filler_id IS NOT NULL OR placer_id IS NOT NULL",
            name="has_ehr_id",
        ),
        one_of("status", AppointmentStatus),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Lookups by endpoint are served by the unique constraint and indexes above, which
    # all lead with endpoint_id.
    endpoint_id: Mapped[int] = mapped_column(sa.ForeignKey("ehr_endpoints.id"))
    ehr_appointment_id: Mapped[str | None] = mapped_column(sa.String(128))
    placer_id: Mapped[str | None] = mapped_column(sa.String(128))
    filler_id: Mapped[str | None] = mapped_column(sa.String(128))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # IANA zone the clinic shows times in, for SMS text and the visit page.
    timezone: Mapped[str] = mapped_column(sa.String(64))
    department_display: Mapped[str | None] = mapped_column(sa.String(200))
    status: Mapped[str] = mapped_column(sa.String(16), default=AppointmentStatus.BOOKED)
    # The newest EHR message applied; an HL7 update older than this is ignored, since
    # interfaces may deliver out of order after a resend.
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # When a provider ended the visit for everyone; nobody can join after it.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # A short note a provider shows in the lobby ("Running 10 minutes late"); staff text,
    # never clinical, cleared with a new empty note.
    lobby_note: Mapped[str | None] = mapped_column(sa.String(200))
    lobby_note_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)

    endpoint: Mapped[EhrEndpoint] = relationship()
    # Not passive: the ORM deletes children itself, so cascades also hold on SQLite,
    # which enforces ON DELETE only with PRAGMA foreign_keys on.
    participants: Mapped[list[Participant]] = relationship(
        back_populates="appointment", cascade="all, delete-orphan", order_by="Participant.id")

    def __repr__(self) -> str:
        return f"<Appointment {self.id} endpoint={self.endpoint_id} status={self.status}>"


class Participant(db.Model):
    """Someone in a visit. Identified by EHR user id; named only when a provider."""

    __tablename__ = "participants"
    __table_args__ = (
        # One participant per EHR user per visit, so two concurrent launches by the same
        # provider meet at the same row. Guests without an EHR id are not limited (NULLs
        # never collide in a unique constraint).
        sa.UniqueConstraint("appointment_id", "ehr_user_id",
                            name="uq_participants_appointment_id_ehr_user_id"),
        # Reports filtered by a provider start from that provider's visits.
        sa.Index("ix_participants_ehr_user_id", "ehr_user_id"),
        one_of("role", ParticipantRole),
        # Patients are never named here (their name stays in the EHR); providers, and the
        # guests and interpreters a provider adds by name, are.
        sa.CheckConstraint(f"display_name IS NULL OR role != '{ParticipantRole.PATIENT.value}'",
                           name="display_name_not_patient"),
        one_of("presence", PresenceState),
        one_of("join_route", JoinRoute),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(sa.String(16))
    # A FHIR reference such as "Practitioner/abc"; never a name.
    ehr_user_id: Mapped[str | None] = mapped_column(sa.String(255))
    display_name: Mapped[str | None] = mapped_column(sa.String(200))
    # BCP 47 tag ("en", "es", "zh-Hant") for the pages and texts this person gets.
    language: Mapped[str | None] = mapped_column(sa.String(16))
    # How they last opened the visit (SMS link, MyChart, guest link); NULL before it was
    # recorded or when never opened. A route, not a device or address.
    join_route: Mapped[str | None] = mapped_column(sa.String(16))
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Current presence, as recorded by the last PresenceEvent; kept on the row so a
    # visit page renders without replaying events and changes are one conditional UPDATE.
    presence: Mapped[str] = mapped_column(sa.String(16), default=PresenceState.NEVER,
                                          server_default=PresenceState.NEVER.value)
    presence_since: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Set when the participant's last socket closed; the disconnect becomes final once
    # the grace period has passed without a new socket. Indexed: the sweep reads only these.
    sockets_gone_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    appointment: Mapped[Appointment] = relationship(back_populates="participants")
    join_links: Mapped[list[JoinLink]] = relationship(
        back_populates="participant", cascade="all, delete-orphan")
    presence_events: Mapped[list[PresenceEvent]] = relationship(
        back_populates="participant", cascade="all, delete-orphan")
    lobby_entries: Mapped[list[LobbyEntry]] = relationship(
        back_populates="participant", cascade="all, delete-orphan",
        foreign_keys="LobbyEntry.participant_id")
    quality_samples: Mapped[list[CallQualitySample]] = relationship(
        back_populates="participant", cascade="all, delete-orphan")

    @property
    def is_staff(self) -> bool:
        """Providers see and run the whole visit; everyone else sees their own state."""
        return self.role == ParticipantRole.PROVIDER

    def __repr__(self) -> str:
        return f"<Participant {self.id} appointment={self.appointment_id} role={self.role}>"


class JoinLink(db.Model):
    """A personal link to a visit. Only the token's hash is kept, so a leaked database
    does not let anyone join."""

    __tablename__ = "join_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    participant: Mapped[Participant] = relationship(back_populates="join_links")

    @staticmethod
    def hash_token(token: str) -> str:
        """The stored form of a token: SHA-256 hex. Tokens are random, so no salt is needed."""
        return hashlib.sha256(token.encode("utf-8")).hexdigest()

    def is_usable_at(self, now: datetime) -> bool:
        """Not revoked and not yet expired at ``now``."""
        return self.revoked_at is None and now < self.expires_at

    def __repr__(self) -> str:
        return f"<JoinLink {self.id} participant={self.participant_id}>"


class PresenceEvent(db.Model):
    """A participant's presence changing, as recorded after the reconnect grace period."""

    __tablename__ = "presence_events"
    __table_args__ = (
        # "Latest event per participant" is the common question; this index answers it
        # and covers the foreign key.
        sa.Index("ix_presence_events_participant_id_at", "participant_id", "at"),
        one_of("kind", PresenceKind),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(16))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # Which server process saw it, so others can clear presence a dead process left behind.
    process_id: Mapped[str | None] = mapped_column(sa.String(64))

    participant: Mapped[Participant] = relationship(back_populates="presence_events")

    def __repr__(self) -> str:
        return f"<PresenceEvent {self.id} participant={self.participant_id} kind={self.kind}>"


class ServerProcess(db.Model):
    """A running server process, known by its heartbeat. When the heartbeat stops, the
    other processes remove the sockets it held, so presence does not stay "connected"."""

    __tablename__ = "server_processes"

    process_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)

    def __repr__(self) -> str:
        return f"<ServerProcess {self.process_id}>"


class LiveSocket(db.Model):
    """An open Socket.IO connection of a participant, on some server process. A
    participant is connected while at least one of these exists."""

    __tablename__ = "live_sockets"

    sid: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    process_id: Mapped[str] = mapped_column(sa.String(64), index=True)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # One-way: the database's ON DELETE CASCADE removes sockets with their participant.
    participant: Mapped[Participant] = relationship()

    def __repr__(self) -> str:
        return f"<LiveSocket participant={self.participant_id} process={self.process_id}>"


class LobbyEntry(db.Model):
    """One wait in the lobby: when it began, who admitted the participant and when."""

    __tablename__ = "lobby_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), index=True)
    entered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    admitted_by_participant_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="SET NULL"), index=True)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    participant: Mapped[Participant] = relationship(
        back_populates="lobby_entries", foreign_keys=[participant_id])
    admitted_by: Mapped[Participant | None] = relationship(
        foreign_keys=[admitted_by_participant_id])

    @property
    def is_waiting(self) -> bool:
        return self.admitted_at is None and self.left_at is None

    def __repr__(self) -> str:
        return f"<LobbyEntry {self.id} participant={self.participant_id} waiting={self.is_waiting}>"


class CallQualitySample(db.Model):
    """WebRTC statistics a participant's browser reported; any figure may be missing."""

    __tablename__ = "call_quality_samples"
    __table_args__ = (
        sa.Index("ix_call_quality_samples_participant_id_at", "participant_id", "at"),
        # The retention purge deletes by age.
        sa.Index("ix_call_quality_samples_at", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    rtt_ms: Mapped[float | None] = mapped_column(sa.Float)
    jitter_ms: Mapped[float | None] = mapped_column(sa.Float)
    packet_loss_pct: Mapped[float | None] = mapped_column(sa.Float)
    bitrate_in_kbps: Mapped[float | None] = mapped_column(sa.Float)
    bitrate_out_kbps: Mapped[float | None] = mapped_column(sa.Float)
    # Estimated from RTT, jitter and loss when stored (visits/quality.py, the device
    # test's E-model), so reports need not recompute it.
    mos: Mapped[float | None] = mapped_column(sa.Float)
    # The browser's selected candidate pair went through our TURN relay.
    relayed: Mapped[bool | None] = mapped_column(sa.Boolean)
    # Coarse families from the User-Agent ("Chrome", "iOS"); the header itself is not kept.
    browser_family: Mapped[str | None] = mapped_column(sa.String(24))
    os_family: Mapped[str | None] = mapped_column(sa.String(24))

    participant: Mapped[Participant] = relationship(back_populates="quality_samples")

    def __repr__(self) -> str:
        return f"<CallQualitySample {self.id} participant={self.participant_id}>"


class QualitySums:
    """What a call-quality rollup adds up for each measure (RTT, jitter, loss, bitrate,
    MOS): the sum and count of the samples that had it, and counts in five buckets
    (visits/quality.py draws the bucket edges). Shared by the per-person and per-day rows."""

    rtt_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    rtt_n: Mapped[int] = mapped_column(default=0, server_default="0")
    jitter_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    jitter_n: Mapped[int] = mapped_column(default=0, server_default="0")
    loss_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    loss_n: Mapped[int] = mapped_column(default=0, server_default="0")
    bitrate_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    bitrate_n: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    mos_n: Mapped[int] = mapped_column(default=0, server_default="0")
    rtt_b0: Mapped[int] = mapped_column(default=0, server_default="0")
    rtt_b1: Mapped[int] = mapped_column(default=0, server_default="0")
    rtt_b2: Mapped[int] = mapped_column(default=0, server_default="0")
    rtt_b3: Mapped[int] = mapped_column(default=0, server_default="0")
    rtt_b4: Mapped[int] = mapped_column(default=0, server_default="0")
    jitter_b0: Mapped[int] = mapped_column(default=0, server_default="0")
    jitter_b1: Mapped[int] = mapped_column(default=0, server_default="0")
    jitter_b2: Mapped[int] = mapped_column(default=0, server_default="0")
    jitter_b3: Mapped[int] = mapped_column(default=0, server_default="0")
    jitter_b4: Mapped[int] = mapped_column(default=0, server_default="0")
    loss_b0: Mapped[int] = mapped_column(default=0, server_default="0")
    loss_b1: Mapped[int] = mapped_column(default=0, server_default="0")
    loss_b2: Mapped[int] = mapped_column(default=0, server_default="0")
    loss_b3: Mapped[int] = mapped_column(default=0, server_default="0")
    loss_b4: Mapped[int] = mapped_column(default=0, server_default="0")
    bitrate_b0: Mapped[int] = mapped_column(default=0, server_default="0")
    bitrate_b1: Mapped[int] = mapped_column(default=0, server_default="0")
    bitrate_b2: Mapped[int] = mapped_column(default=0, server_default="0")
    bitrate_b3: Mapped[int] = mapped_column(default=0, server_default="0")
    bitrate_b4: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_b0: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_b1: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_b2: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_b3: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_b4: Mapped[int] = mapped_column(default=0, server_default="0")


class CallQualityRollup(QualitySums, db.Model):
    """One participant's call quality summed as samples arrive, so reports read a row per
    person in a call instead of every 10-s sample: sums and counts for the means, and
    counts per bucket (``visits.quality.BUCKETS``) for the distributions. Outlives the
    samples it sums (the retention purge deletes samples only)."""

    __tablename__ = "call_quality_rollups"
    __table_args__ = (
        # Reports ask "calls of these endpoints that began in these days".
        sa.Index("ix_call_quality_rollups_endpoint_id_day", "endpoint_id", "day"),
    )

    participant_id: Mapped[int] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="CASCADE"), primary_key=True)
    appointment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="CASCADE"), index=True)
    endpoint_id: Mapped[int] = mapped_column(sa.Integer)
    role: Mapped[str] = mapped_column(sa.String(16))
    browser_family: Mapped[str | None] = mapped_column(sa.String(24))
    os_family: Mapped[str | None] = mapped_column(sa.String(24))
    first_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # The day of ``first_at`` in the endpoint's time zone: the call's day in every report.
    day: Mapped[date] = mapped_column(sa.Date)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime())
    samples: Mapped[int] = mapped_column(default=0, server_default="0")
    # Samples whose estimated MOS was below visits.quality.POOR_MOS, and relayed ones.
    poor: Mapped[int] = mapped_column(default=0, server_default="0")
    relayed: Mapped[int] = mapped_column(default=0, server_default="0")

    def __repr__(self) -> str:
        return f"<CallQualityRollup participant={self.participant_id} samples={self.samples}>"


class CallQualityDay(QualitySums, db.Model):
    """The rollups of one endpoint's day summed per role and browser and OS family, kept as
    samples arrive (visits/quality.py), so a report over months reads a few rows a day.
    Unknown families are stored as ``""`` so the key is unique."""

    __tablename__ = "call_quality_days"
    __table_args__ = (
        sa.UniqueConstraint("endpoint_id", "day", "role", "browser_family", "os_family",
                            name="uq_call_quality_days_endpoint_id_day_role_families"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(sa.Integer)
    day: Mapped[date] = mapped_column(sa.Date)
    role: Mapped[str] = mapped_column(sa.String(16))
    browser_family: Mapped[str] = mapped_column(sa.String(24))
    os_family: Mapped[str] = mapped_column(sa.String(24))
    people: Mapped[int] = mapped_column(default=0, server_default="0")
    relayed_people: Mapped[int] = mapped_column(default=0, server_default="0")
    samples: Mapped[int] = mapped_column(default=0, server_default="0")
    poor: Mapped[int] = mapped_column(default=0, server_default="0")

    def __repr__(self) -> str:
        return f"<CallQualityDay endpoint={self.endpoint_id} day={self.day} role={self.role}>"


class CallQualityVisit(db.Model):
    """One visit's call quality summed over everyone in it, kept as samples arrive: the
    report's visit counts, TURN share and worst visits (by ``mos_mean``, indexed)."""

    __tablename__ = "call_quality_visits"
    __table_args__ = (
        sa.Index("ix_call_quality_visits_endpoint_id_day", "endpoint_id", "day", "relayed"),
    )

    appointment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="CASCADE"), primary_key=True)
    endpoint_id: Mapped[int] = mapped_column(sa.Integer)
    day: Mapped[date] = mapped_column(sa.Date)
    first_at: Mapped[datetime] = mapped_column(UTCDateTime())
    people: Mapped[int] = mapped_column(default=0, server_default="0")
    # People in it whose path went through TURN at least once.
    relayed: Mapped[int] = mapped_column(default=0, server_default="0")
    samples: Mapped[int] = mapped_column(default=0, server_default="0")
    poor: Mapped[int] = mapped_column(default=0, server_default="0")
    rtt_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    rtt_n: Mapped[int] = mapped_column(default=0, server_default="0")
    loss_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    loss_n: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_sum: Mapped[float] = mapped_column(sa.Float, default=0, server_default="0")
    mos_n: Mapped[int] = mapped_column(default=0, server_default="0")
    mos_mean: Mapped[float | None] = mapped_column(sa.Float, index=True)

    def __repr__(self) -> str:
        return f"<CallQualityVisit appointment={self.appointment_id} mos={self.mos_mean}>"


class AuditLog(db.Model):
    """Who did what to which row. No foreign keys: the trail must outlive the rows it
    names. ``detail`` carries ids and codes, never PHI (no names, phones, tokens)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        sa.Index("ix_audit_log_target_type_target_id", "target_type", "target_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    # "admin:<user>", "participant:<id>", "ehr:<endpoint name>", "system".
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(64))
    target_type: Mapped[str | None] = mapped_column(sa.String(64))
    target_id: Mapped[str | None] = mapped_column(sa.String(64))
    detail: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON)

    def __repr__(self) -> str:
        return f"<AuditLog {self.id} {self.action} {self.target_type}:{self.target_id}>"
