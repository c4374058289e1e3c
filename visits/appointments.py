"""Appointments and their participants, as the EHR's FHIR resources describe them.

A provider may launch a visit we have never heard of (no HL7 feed, or not yet): the
visit is then created from the FHIR Appointment on the fly. Only ids, times, status and
the department's name are kept; the patient is a reference (``Patient/<id>``), never a
name. These functions flush but do not commit: the caller (a launch, an HL7 message)
commits once, so a failure later in its work leaves nothing half-made behind.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from extensions import db
from visits.models import (
    Appointment,
    AppointmentStatus,
    AuditLog,
    Participant,
    ParticipantRole,
)

# The audit action of a provider's launch; its detail keeps the Practitioner's identifiers.
PROVIDER_LAUNCH = "provider_launch"

# FHIR Appointment.status -> ours. Anything not yet started counts as booked; a
# retracted appointment (entered-in-error) can no longer be joined, like a cancelled one.
STATUS_FROM_FHIR = {
    "proposed": AppointmentStatus.BOOKED,
    "pending": AppointmentStatus.BOOKED,
    "booked": AppointmentStatus.BOOKED,
    "waitlist": AppointmentStatus.BOOKED,
    "arrived": AppointmentStatus.ARRIVED,
    "checked-in": AppointmentStatus.ARRIVED,
    "fulfilled": AppointmentStatus.FULFILLED,
    "cancelled": AppointmentStatus.CANCELLED,
    "entered-in-error": AppointmentStatus.CANCELLED,
    "noshow": AppointmentStatus.NOSHOW,
}
# When the EHR gives a start but neither end nor duration.
DEFAULT_DURATION = timedelta(minutes=30)


class AppointmentUnusable(ValueError):
    """The FHIR Appointment lacks what a visit needs (an id, a start time)."""


def upsert_from_fhir(endpoint, appointment_resource: dict[str, Any], *,
                     identifiers: dict[str, tuple[str, ...]] | None = None) -> Appointment:
    """Create or update the visit for a FHIR Appointment of ``endpoint``, with its patient
    (``Patient/<id>``, no name) and providers (``Practitioner/<id>``, with their display).
    ``identifiers`` maps a Practitioner reference to its identifiers when they were read
    (the launching provider), so the row an HL7 booking made for them is claimed."""
    fhir_id = appointment_resource.get("id")
    if appointment_resource.get("resourceType", "Appointment") != "Appointment" or not fhir_id:
        raise AppointmentUnusable("not an Appointment with an id")
    start, end = _period(appointment_resource)
    appointment = _find(endpoint.id, fhir_id) or _adopt_hl7(endpoint.id, appointment_resource)
    if appointment is None:
        appointment = _create(endpoint, fhir_id, start, end)
    appointment.start_at, appointment.end_at = start, end
    appointment.timezone = endpoint.site_timezone
    appointment.status = STATUS_FROM_FHIR.get(appointment_resource.get("status", ""),
                                              AppointmentStatus.BOOKED)
    appointment.department_display = _department(appointment_resource)
    for reference, display in _actors(appointment_resource, endpoint.fhir_base_url):
        if reference.startswith("Patient/"):
            _claim_placeholder(appointment, reference, ParticipantRole.PATIENT)
            _ensure_participant(appointment, reference, ParticipantRole.PATIENT, None)
        elif reference.startswith("Practitioner/"):
            _claim_provider(appointment, reference, (identifiers or {}).get(reference, ()))
            _ensure_participant(appointment, reference, ParticipantRole.PROVIDER, display)
    db.session.flush()
    return appointment


def ensure_provider(appointment: Appointment, ehr_user_id: str, display_name: str | None,
                    *, identifiers: tuple[str, ...] = ()) -> Participant:
    """The participant for this EHR user in the visit, added as a provider if new.

    Idempotent: a relaunch finds the same row and keeps its role (an interpreter stays
    an interpreter); the display name is refreshed for providers only. A provider an HL7
    booking added first (``Practitioner?identifier=<one of identifiers>``) is this user:
    that row takes the FHIR reference rather than a second row being added."""
    _claim_provider(appointment, ehr_user_id, identifiers)
    return _ensure_participant(appointment, ehr_user_id, ParticipantRole.PROVIDER, display_name)


def fhir_identifiers(resource: dict[str, Any]) -> tuple[str, ...]:
    """A FHIR resource's identifiers as ``system|value`` (``value`` alone without a system),
    the form an HL7 message's ids are read in (hl7feed.hl7)."""
    found: list[str] = []
    for identifier in resource.get("identifier") or []:
        if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
            continue
        system = identifier.get("system")
        key = f"{system}|{identifier['value']}" if isinstance(system, str) and system \
            else identifier["value"]
        if key not in found:
            found.append(key)
    return tuple(found)


def identifier_matches(hl7_identifier: str, identifiers: tuple[str, ...] | list[str]) -> bool:
    """An HL7 id (``authority|id``, or a bare id when the message named no authority) is one
    of a Practitioner's FHIR identifiers (``system|value``): the same value, and the same
    system once both are spelt alike (``urn:oid:`` dropped; ``NPI`` in XCN-9 and the NPI's
    OID are the FHIR NPI system). A bare id matches on its value: that is all a feed
    without an authority says, and it is compared only with the visit's own providers."""
    if not hl7_identifier:
        return False
    authority, _, value = hl7_identifier.rpartition("|")
    for identifier in identifiers:
        system, _, other = identifier.rpartition("|")
        if other == value and (not authority or _system(authority) == _system(system)):
            return True
    return False


# How feeds write the NPI's assigning authority (XCN-9) or its system.
_NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
_NPI_ALIASES = {"npi", "2.16.840.1.113883.4.6", _NPI_SYSTEM}


def _system(name: str) -> str:
    name = name.strip().lower().removeprefix("urn:oid:")
    return _NPI_SYSTEM if name in _NPI_ALIASES else name


def provider_for_hl7(appointment: Appointment, identifier: str) -> Participant | None:
    """The provider an HL7 message names by ``identifier`` (AIP-3, ``authority|id``): the
    row an earlier message made (``Practitioner?identifier=...``), else a provider who
    launched this visit and whose Practitioner carries that identifier, as the launch read
    it (its audit row). None when the message names someone new."""
    reference = f"Practitioner?identifier={identifier}"[:255]
    exact = next((p for p in appointment.participants if p.ehr_user_id == reference), None)
    if exact is not None:
        return exact
    launched = {f"participant:{p.id}": p for p in appointment.participants
                if p.role == ParticipantRole.PROVIDER and p.id is not None
                and (p.ehr_user_id or "").startswith("Practitioner/")}
    if not launched:
        return None
    rows = db.session.execute(
        db.select(AuditLog.actor, AuditLog.detail)
        .where(AuditLog.target_type == "appointment",
               AuditLog.target_id == str(appointment.id),
               AuditLog.action == PROVIDER_LAUNCH, AuditLog.actor.in_(launched))
        .order_by(AuditLog.id.desc())).all()
    for actor, detail in rows:
        if identifier_matches(identifier, (detail or {}).get("identifiers") or []):
            return launched[actor]
    return None


def _claim_provider(appointment: Appointment, reference: str,
                    identifiers: tuple[str, ...]) -> None:
    """The provider row an HL7 booking made (``Practitioner?identifier=...``) for someone
    whose Practitioner carries that identifier takes the FHIR reference ``reference``."""
    if not identifiers or any(p.ehr_user_id == reference for p in appointment.participants):
        return
    placeholder = next((p for p in appointment.participants
                        if p.role == ParticipantRole.PROVIDER and identifier_matches(
                            _hl7_identifier(p.ehr_user_id or ""), identifiers)), None)
    if placeholder is not None:
        placeholder.ehr_user_id = reference


def _hl7_identifier(ehr_user_id: str) -> str:
    """``auth|id`` of a row an HL7 message made (``Practitioner?identifier=auth|id``), else
    empty."""
    prefix = "Practitioner?identifier="
    return ehr_user_id[len(prefix):] if ehr_user_id.startswith(prefix) else ""


def find_for_hl7(endpoint_id: int, filler_id: str | None,
                 placer_id: str | None) -> Appointment | None:
    """The visit an HL7 message is about: by SCH-2 (filler id) when given, else SCH-1
    (placer id); failing that, a visit first made by a launch whose FHIR id is one of
    them (Epic's FHIR Appointment id is what its interface sends as an id)."""
    column, value = ((Appointment.filler_id, filler_id) if filler_id
                     else (Appointment.placer_id, placer_id))
    found = db.session.execute(
        db.select(Appointment).where(Appointment.endpoint_id == endpoint_id, column == value)
        .order_by(Appointment.id).limit(1)).scalar_one_or_none()
    if found is not None:
        return found
    ids = [v for v in (filler_id, placer_id) if v]
    return db.session.execute(
        db.select(Appointment).where(Appointment.endpoint_id == endpoint_id,
                                     Appointment.ehr_appointment_id.in_(ids))
        .order_by(Appointment.id).limit(1)).scalar_one_or_none() if ids else None


def patient_for_hl7(appointment: Appointment, identifier_ref: str) -> Participant | None:
    """The patient an HL7 message names (``Patient?identifier=...``), or the visit's one
    patient already known by FHIR id from a launch: a video visit has one patient, and
    the EHR sent both for the same appointment."""
    patients = [p for p in appointment.participants if p.role == ParticipantRole.PATIENT]
    exact = next((p for p in patients if p.ehr_user_id == identifier_ref), None)
    if exact is not None:
        return exact
    return patients[0] if len(patients) == 1 else None


def _adopt_hl7(endpoint_id: int, resource: dict[str, Any]) -> Appointment | None:
    """A visit an HL7 feed created before any launch: its placer or filler id is this
    FHIR Appointment's id or one of its identifiers. It takes the FHIR id from now on."""
    ids = {resource["id"]} | {i.get("value") for i in resource.get("identifier") or []
                              if isinstance(i, dict) and isinstance(i.get("value"), str)}
    ids.discard(None)
    found = db.session.execute(
        db.select(Appointment).where(
            Appointment.endpoint_id == endpoint_id, Appointment.ehr_appointment_id.is_(None),
            Appointment.filler_id.in_(ids) | Appointment.placer_id.in_(ids))
        .order_by(Appointment.id).limit(1)).scalar_one_or_none()
    if found is not None:
        found.ehr_appointment_id = resource["id"]
    return found


def _claim_placeholder(appointment: Appointment, reference: str, role: str) -> None:
    """An HL7-made visit knows its patient only as ``Patient?identifier=...``; the launch
    names them ``Patient/<id>``. With one patient in the visit they are the same person:
    keep the row (their join links and phone) and give it the FHIR reference."""
    same_role = [p for p in appointment.participants if p.role == role]
    if any(p.ehr_user_id == reference for p in same_role) or len(same_role) != 1:
        return
    if same_role[0].ehr_user_id.startswith(reference.split("/")[0] + "?identifier="):
        same_role[0].ehr_user_id = reference


def _find(endpoint_id: int, fhir_id: str) -> Appointment | None:
    return db.session.execute(
        db.select(Appointment).filter_by(endpoint_id=endpoint_id, ehr_appointment_id=fhir_id)
    ).scalar_one_or_none()


def _create(endpoint, fhir_id: str, start: datetime, end: datetime) -> Appointment:
    """Insert in a savepoint: a concurrent launch of the same visit may win the race, and
    then its row is the one we use."""
    appointment = Appointment(endpoint_id=endpoint.id, ehr_appointment_id=fhir_id,
                              start_at=start, end_at=end, timezone=endpoint.site_timezone)
    try:
        with db.session.begin_nested():
            db.session.add(appointment)
    except IntegrityError:
        existing = _find(endpoint.id, fhir_id)
        if existing is None:
            raise
        return existing
    return appointment


def _ensure_participant(appointment: Appointment, ehr_user_id: str, role: str,
                        display_name: str | None) -> Participant:
    participant = next((p for p in appointment.participants if p.ehr_user_id == ehr_user_id),
                       None)
    if participant is None:
        participant = Participant(ehr_user_id=ehr_user_id, role=role,
                                  display_name=display_name[:200] if display_name and
                                  role == ParticipantRole.PROVIDER else None)
        try:
            with db.session.begin_nested():
                appointment.participants.append(participant)
                db.session.flush()
        except IntegrityError:  # the same user launched twice at once
            db.session.expire(appointment, ["participants"])
            return next(p for p in appointment.participants if p.ehr_user_id == ehr_user_id)
        return participant
    if display_name and participant.role == ParticipantRole.PROVIDER:
        participant.display_name = display_name[:200]
    return participant


def _period(resource: dict[str, Any]) -> tuple[datetime, datetime]:
    start = _instant(resource.get("start"))
    if start is None:
        raise AppointmentUnusable("the Appointment has no start time")
    end = _instant(resource.get("end"))
    if end is None or end < start:
        minutes = resource.get("minutesDuration")
        end = start + (timedelta(minutes=minutes) if isinstance(minutes, int) and minutes > 0
                       else DEFAULT_DURATION)
    return start, end


def _instant(value: Any) -> datetime | None:
    """A FHIR instant (always with an offset); None when missing or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _actors(resource: dict[str, Any], base_url: str = "") -> list[tuple[str, str | None]]:
    """(relative reference, display) of each participant actor; absolute references are
    kept only when they are on the endpoint's own FHIR base."""
    found = []
    for participant in resource.get("participant") or []:
        actor = participant.get("actor") or {}
        reference = actor.get("reference")
        if isinstance(reference, str) and base_url and reference.startswith(base_url + "/"):
            reference = reference[len(base_url) + 1:]
        if isinstance(reference, str) and reference.count("/") == 1 and "://" not in reference:
            display = actor.get("display") if isinstance(actor.get("display"), str) else None
            found.append((reference, display))
    return found


def _department(resource: dict[str, Any]) -> str | None:
    """The Location participant's display, else the first serviceType's text."""
    for reference, display in _actors(resource):
        if reference.startswith("Location/") and display:
            return display[:200]
    for concept in resource.get("serviceType") or []:
        text = concept.get("text") or next(
            (c.get("display") for c in concept.get("coding") or [] if c.get("display")), None)
        if text:
            return str(text)[:200]
    return None
