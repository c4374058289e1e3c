"""How a patient (or a guest invited by link) gets into their visit, without Flask's
request or session: by opening a join link, or by a SMART launch from the patient
portal (MyChart). Both end in a ``PatientPass``, the small record the browser's signed
session keeps instead of the token, and every later page and socket checks it again.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from ehr import launch as ehr_launch
from ehr import smart
from ehr.fhir import FhirClient
from ehr.launch import LaunchFailed
from ehr.models import EhrEndpoint
from extensions import db
from visits import writer
from visits.appointments import AppointmentUnusable, upsert_from_fhir
from visits.errors import LinkExpired, LinkUnknown, VisitError
from visits.links import MAX_TOKEN_LENGTH, default_expiry, holder_of_token
from visits.models import (
    Appointment,
    AppointmentStatus,
    AuditLog,
    JoinLink,
    JoinRoute,
    Participant,
    ParticipantRole,
)

log = logging.getLogger(__name__)

# Where the browser's signed session keeps the pass (``session["patient"]``).
SESSION_KEY = "patient"

# Who may open a portal launch: the patient, or a proxy (a parent, a carer) acting for them.
PORTAL_USERS = ("Patient", "RelatedPerson")
# FHIR Appointment statuses a patient can no longer join.
_NOT_JOINABLE = {"cancelled", "entered-in-error", "noshow"}
_VIDEO_WORDS = re.compile(r"video|virtual|tele|online", re.I)


class NoPatientSession(VisitError):
    """The browser holds no (readable) pass: it never opened a link or a portal launch."""


@dataclass(frozen=True)
class PatientPass:
    """What the browser's signed session keeps: who, until when, and by which link (so a
    revoked link stops working at once). Never the token itself."""

    participant_id: int
    appointment_id: int
    expires_at: datetime
    link_id: int | None = None

    def to_session(self) -> dict[str, Any]:
        return {"participant_id": self.participant_id, "appointment_id": self.appointment_id,
                "expires_at": self.expires_at.isoformat(), "link_id": self.link_id}

    @classmethod
    def from_session(cls, data: Any) -> PatientPass:
        """Read a pass back; NoPatientSession when it is missing or malformed."""
        if not isinstance(data, dict):
            raise NoPatientSession("No visit is open in this browser.")
        try:
            expires_at = datetime.fromisoformat(data["expires_at"])
            participant_id, appointment_id = data["participant_id"], data["appointment_id"]
            link_id = data.get("link_id")
        except (KeyError, TypeError, ValueError):
            raise NoPatientSession("No visit is open in this browser.") from None
        if not _is_id(participant_id) or not _is_id(appointment_id) \
                or not (link_id is None or _is_id(link_id)) or expires_at.tzinfo is None:
            raise NoPatientSession("No visit is open in this browser.")
        return cls(participant_id, appointment_id, expires_at, link_id)


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def open_link(token: str, now: datetime) -> PatientPass:
    """A join link was opened: the pass it gives (LinkUnknown, LinkExpired otherwise).
    One read; when it was used and how they joined (a patient's personal link is the one
    texted to them, for the usage report) are written behind, like a socket's use."""
    writer.reads_only()
    holder = holder_of_token(token, now)
    writer.link_used(holder.link_id, now)
    writer.joined_by(holder.participant_id, JoinRoute.SMS.value
                     if holder.role == ParticipantRole.PATIENT else JoinRoute.GUEST.value)
    writer.flush_if_immediate()
    log.info("join link opened", extra={"participant_id": holder.participant_id,
                                        "appointment_id": holder.appointment_id})
    return PatientPass(holder.participant_id, holder.appointment_id, holder.expires_at,
                       holder.link_id)


@dataclass(frozen=True)
class LobbyWindow:
    """The endpoint setting the lobby rules read (``EhrEndpoint.lobby_opens_before_minutes``)."""

    lobby_opens_before_minutes: int


@dataclass(frozen=True)
class AppointmentFacts:
    """An appointment's columns the join page shows, shaped like ``Appointment`` where the
    visit rules read it (``lobby.lobby_opens_at``, ``lobby.is_lobby_open``, ``is_joinable``)
    so those rules apply unchanged, without loading ORM objects."""

    id: int
    endpoint_id: int
    start_at: datetime
    end_at: datetime
    timezone: str
    department_display: str | None
    status: str
    ended_at: datetime | None
    endpoint: LobbyWindow


@dataclass(frozen=True)
class ParticipantFacts:
    """Who holds the pass (``device_test.context.make_token`` reads it like a Participant)."""

    id: int
    role: str
    appointment: AppointmentFacts


@dataclass(frozen=True)
class JoinVisit:
    """Who holds the pass, their visit, and the names of its providers (in participant
    order), as the join page shows them."""

    participant: ParticipantFacts
    providers: tuple[str, ...]

    @property
    def appointment(self) -> AppointmentFacts:
        return self.participant.appointment


def _join_visit_query() -> sa.Select:
    """Participant, appointment, endpoint window, the pass's link (if any) and the named
    providers: one row per provider, at least one row when the participant exists."""
    participant, appointment = Participant.__table__, Appointment.__table__
    endpoint, link = EhrEndpoint.__table__, JoinLink.__table__
    provider = Participant.__table__.alias("provider")
    return (
        sa.select(participant.c.id, participant.c.role, participant.c.appointment_id,
                  appointment.c.endpoint_id, appointment.c.start_at, appointment.c.end_at,
                  appointment.c.timezone, appointment.c.department_display,
                  appointment.c.status, appointment.c.ended_at,
                  endpoint.c.lobby_opens_before_minutes,
                  link.c.id.label("link_id"), link.c.participant_id.label("link_participant_id"),
                  link.c.revoked_at, link.c.expires_at,
                  provider.c.display_name.label("provider_name"))
        .select_from(
            participant
            .join(appointment, appointment.c.id == participant.c.appointment_id)
            .join(endpoint, endpoint.c.id == appointment.c.endpoint_id)
            .outerjoin(link, link.c.id == sa.bindparam("link_id"))
            .outerjoin(provider, sa.and_(provider.c.appointment_id == appointment.c.id,
                                         provider.c.role == ParticipantRole.PROVIDER.value,
                                         provider.c.display_name.is_not(None),
                                         provider.c.display_name != "")))
        .where(participant.c.id == sa.bindparam("participant_id"))
        .order_by(provider.c.id))


_JOIN_VISIT = _join_visit_query()


def join_visit(data: Any, now: datetime) -> JoinVisit:
    """The visit a session's pass stands for, if the pass still holds: not expired, its
    link this participant's and neither revoked nor expired, the person still in that
    visit (NoPatientSession, LinkExpired, LinkUnknown otherwise). The checks and what the
    join page shows take one query on a plain connection, instead of five ORM round
    trips; nothing is cached, so a revoked or expired link stops the page at once."""
    patient_pass = PatientPass.from_session(data)
    if now >= patient_pass.expires_at:
        raise LinkExpired()
    with db.engine.connect() as connection:
        if connection.dialect.name == "postgresql":  # one read: no BEGIN, ROLLBACK around it
            connection.execution_options(isolation_level="AUTOCOMMIT")
        rows = connection.execute(_JOIN_VISIT, {"participant_id": patient_pass.participant_id,
                                                "link_id": patient_pass.link_id}).all()
    first = rows[0] if rows else None
    if patient_pass.link_id is not None:
        # check_link's rules: the link exists, is this participant's and still usable.
        if first is None or first.link_id is None \
                or first.link_participant_id != patient_pass.participant_id:
            raise LinkUnknown()
        if not JoinLink.is_usable_at(first, now):  # reads revoked_at and expires_at
            raise LinkExpired()
    if first is None or first.appointment_id != patient_pass.appointment_id:
        raise LinkUnknown()
    appointment = AppointmentFacts(
        first.appointment_id, first.endpoint_id, first.start_at, first.end_at, first.timezone,
        first.department_display, first.status, first.ended_at,
        LobbyWindow(first.lobby_opens_before_minutes))
    return JoinVisit(ParticipantFacts(first.id, first.role, appointment),
                     tuple(row.provider_name for row in rows if row.provider_name is not None))


def clinic_phone(*, token: str | None = None, appointment_id: int | None = None) -> str | None:
    """The clinic phone a refusal page may show: the endpoint's of the link's (or the
    pass's) appointment. For a token that names no link, only a number every approved
    endpoint shares (a one-clinic install): a patient must never be sent to another
    clinic's phone."""
    endpoint, appointment = EhrEndpoint.__table__, Appointment.__table__
    if token and len(token) <= MAX_TOKEN_LENGTH:
        link, participant = JoinLink.__table__, Participant.__table__
        found = db.session.execute(
            sa.select(endpoint.c.clinic_phone)
            .join(appointment, appointment.c.endpoint_id == endpoint.c.id)
            .join(participant, participant.c.appointment_id == appointment.c.id)
            .join(link, link.c.participant_id == participant.c.id)
            .where(link.c.token_hash == JoinLink.hash_token(token))).first()
        if found is not None:
            return found.clinic_phone
    if appointment_id is not None:
        return db.session.execute(
            sa.select(endpoint.c.clinic_phone)
            .join(appointment, appointment.c.endpoint_id == endpoint.c.id)
            .where(appointment.c.id == appointment_id)).scalar()
    phones = set(db.session.execute(
        sa.select(endpoint.c.clinic_phone).where(endpoint.c.approved_at.is_not(None))).scalars())
    return phones.pop() if len(phones) == 1 else None


def is_joinable(appointment: Appointment | AppointmentFacts) -> bool:
    """Not ended by a provider, not cancelled or a no-show."""
    return appointment.ended_at is None and appointment.status not in (
        AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW)


# --- the portal (MyChart) launch ------------------------------------------------------------

def begin_portal_launch(iss: str | None, launch: str | None, *, redirect_uri: str,
                        scope: str) -> ehr_launch.AuthorizeStep:
    """Check the portal's launch and build the authorize redirect with patient scopes."""
    return ehr_launch.begin(iss, launch, redirect_uri=redirect_uri, scope=scope,
                            audience="patient launch", patient=True)


def complete_portal_launch(pending: smart.PendingLaunch, *, code: str, redirect_uri: str,
                           now: datetime) -> PatientPass:
    """Trade the code, find the appointment (fhirContext, the encounter, else the
    patient's video visit today) and its patient participant; commits the visit."""
    endpoint = ehr_launch.pending_endpoint(pending)
    try:
        context = ehr_launch.authenticate(endpoint, pending, code=code,
                                          redirect_uri=redirect_uri)
        patient_ref = _launch_patient(context)
        client = FhirClient(endpoint.fhir_base_url, context.access_token)
        resource = ehr_launch.appointment_in_context(client, context)
        if resource is None:
            with ehr_launch.fhir_refusals(client):
                resource = todays_appointment(client, patient_ref, endpoint, now)
        if resource is None:
            raise LaunchFailed("no_appointment_today", 404)
        if patient_ref not in ehr_launch.patients_of(resource, endpoint.fhir_base_url):
            raise LaunchFailed("context_mismatch", 400)
        appointment = upsert_from_fhir(endpoint, resource)
        participant = next(p for p in appointment.participants if p.ehr_user_id == patient_ref)
        expires_at = default_expiry(appointment)
        if now >= expires_at:
            raise LaunchFailed("visit_over", 410)
        participant.join_route = JoinRoute.MYCHART
        db.session.add(AuditLog(actor=f"participant:{participant.id}", action="patient_launch",
                                target_type="appointment", target_id=str(appointment.id),
                                detail={"endpoint": endpoint.name}))
        db.session.commit()
    except LaunchFailed as exc:
        db.session.rollback()
        exc.endpoint = exc.endpoint or endpoint
        ehr_launch.log_failure("patient launch", exc.reason, endpoint, exc)
        raise
    except AppointmentUnusable as exc:
        db.session.rollback()
        ehr_launch.log_failure("patient launch", "appointment_unusable", endpoint, exc)
        raise LaunchFailed("appointment_unusable", 400, endpoint=endpoint) from None
    except BaseException:
        db.session.rollback()
        raise
    log.info("patient launch completed", extra={"endpoint": endpoint.name,
                                                "appointment_id": appointment.id,
                                                "participant_id": participant.id})
    return PatientPass(participant.id, appointment.id, expires_at)


def _launch_patient(context: smart.LaunchContext) -> str:
    """The patient the portal launched for; a clinician's account is sent to the EHR."""
    user_type = (context.fhir_user or "").split("/", 1)[0]
    if context.fhir_user and user_type not in PORTAL_USERS:
        raise LaunchFailed("not_a_patient", 403, resource_type=user_type)
    patient_ref = context.patient_ref
    if patient_ref is None and user_type == "Patient":
        patient_ref = context.fhir_user
    if patient_ref is None:
        raise LaunchFailed("missing_patient", 400)
    return patient_ref


def todays_appointment(client: FhirClient, patient_ref: str, endpoint: EhrEndpoint,
                       now: datetime) -> dict[str, Any] | None:
    """The patient's visit today (clinic time zone) when the portal named none: one not
    cancelled and whose links still work, preferring video visits, the earliest first."""
    today = now.astimezone(ZoneInfo(endpoint.site_timezone)).date()
    grace = timedelta(minutes=endpoint.link_valid_after_end_minutes)
    found = client.search("Appointment", patient=patient_ref.split("/", 1)[1],
                          date=today.isoformat())
    candidates = []
    for resource in found:
        if resource.get("status") in _NOT_JOINABLE:
            continue
        start, end = _start_end(resource)
        if start is None:
            continue
        over = end is not None and end + grace <= now
        candidates.append((over, not _looks_virtual(resource), start, resource))
    if not candidates:
        return None
    candidates.sort(key=lambda item: item[:3])
    return candidates[0][3]


def _start_end(resource: dict[str, Any]) -> tuple[datetime | None, datetime | None]:
    values = []
    for key in ("start", "end"):
        try:
            moment = datetime.fromisoformat(str(resource.get(key)).replace("Z", "+00:00"))
        except ValueError:
            moment = None
        values.append(moment if moment is not None and moment.tzinfo is not None else None)
    return values[0], values[1]


def _looks_virtual(resource: dict[str, Any]) -> bool:
    """Whether the EHR's visit type reads like a video visit (codes and texts vary by site)."""
    texts = []
    for key in ("serviceType", "serviceCategory", "appointmentType"):
        concepts = resource.get(key) or []
        for concept in concepts if isinstance(concepts, list) else [concepts]:
            if not isinstance(concept, dict):
                continue
            texts.append(str(concept.get("text") or ""))
            texts.extend(f"{c.get('code', '')} {c.get('display', '')}"
                         for c in concept.get("coding") or [] if isinstance(c, dict))
    return any(_VIDEO_WORDS.search(text) for text in texts)
