"""FHIR R4 AuditEvents for what happened in a video visit: who connected, left, was
admitted, and when the visit ended. Pure functions: no database, no HTTP.

The coding is documented in ``docs/ehr-integration.md``. In short: one local ``type``
(no DICOM or FHIR code means "video visit activity"), a ``subtype`` per action from our
own CodeSystem, ``action`` E (an application function was executed), agents by EHR
reference only (never names or phone numbers), and the Appointment (plus Encounter and
Patient when known) as entities. R4 AuditEvent has no ``identifier`` element, so our
business identifier rides on an extra entity's ``what.identifier``; EHRs (and the
sandbox) match the ``identifier`` search parameter there, which makes ``If-None-Exist``
work for retries.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

EVENT_SYSTEM = "urn:virtual-visits:event"
TYPE_SYSTEM = "urn:virtual-visits:audit-event-type"
ACTION_SYSTEM = "urn:virtual-visits:audit-action"
ROLE_SYSTEM = "urn:virtual-visits:participant-role"
PARTICIPANT_SYSTEM = "urn:virtual-visits:participant"
APPOINTMENT_SYSTEM = "urn:virtual-visits:appointment"
_DCM = "http://dicom.nema.org/resources/ontology/DCM"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
_SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
_ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
_OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"

VIDEO_VISIT_TYPE = {"system": TYPE_SYSTEM, "code": "video-visit",
                    "display": "Video visit activity"}
ACTIONS: dict[str, str] = {
    "participant-connected": "Participant connected to the video visit",
    "participant-disconnected": "Participant disconnected from the video visit",
    "participant-admitted": "Participant admitted from the lobby",
    "visit-ended": "Video visit ended",
}
# Connect and disconnect also carry DICOM's Login/Logout subtypes, which audit
# repositories already understand; ours stays first and is the one to search on.
_DICOM_SUBTYPES = {
    "participant-connected": {"system": _DCM, "code": "110122", "display": "Login"},
    "participant-disconnected": {"system": _DCM, "code": "110123", "display": "Logout"},
}
# Event keys go into a FHIR token search (If-None-Exist): no "|", ",", "$" or spaces,
# which search syntax would split or need escaping.
_EVENT_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,120}$")


@dataclass(frozen=True)
class Agent:
    """Someone in the visit as the EHR knows them: a FHIR reference, never a name.

    ``reference`` is ``Practitioner/x`` or ``Patient/x`` when the EHR told us; guests
    have none and are named by our participant id only."""

    role: str  # patient, provider, interpreter, guest
    reference: str | None = None
    participant_id: int | None = None


def business_identifier(action: str, event_key: str) -> str:
    """The value, under EVENT_SYSTEM, naming this fact; the same fact gives the same value."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; one of {', '.join(ACTIONS)}")
    if not _EVENT_KEY.match(event_key):
        raise ValueError("event_key must be 1-120 of A-Z a-z 0-9 . _ : -")
    return f"{action}/{event_key}"


def if_none_exist(identifier: str) -> str:
    """The If-None-Exist header value that finds a write-back we already created (every
    write-back carries its business identifier under EVENT_SYSTEM)."""
    return f"identifier={EVENT_SYSTEM}|{identifier}"


def build(action: str, *, identifier: str, at: datetime, recorded: datetime,
          appointment_reference: str | None, appointment_local_id: int,
          encounter_reference: str | None = None, patient_reference: str | None = None,
          subject: Agent | None = None, requestor: Agent | None = None,
          source_url: str, source_site: str) -> dict[str, Any]:
    """An R4 AuditEvent for ``action``.

    ``subject`` is the participant the event is about (connected, left, admitted);
    ``requestor`` who made it happen (the admitting or ending provider). Without a
    requestor the subject acted themself (connecting, leaving).
    """
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    subtypes = [{"system": ACTION_SYSTEM, "code": action, "display": ACTIONS[action]}]
    if action in _DICOM_SUBTYPES:
        subtypes.append(_DICOM_SUBTYPES[action])
    agents = []
    if subject is not None:
        agents.append(_agent(subject, requestor=requestor is None))
    if requestor is not None:
        agents.append(_agent(requestor, requestor=True))
    if not agents:
        raise ValueError("an AuditEvent needs at least one agent")
    return {
        "resourceType": "AuditEvent",
        "type": VIDEO_VISIT_TYPE,
        "subtype": subtypes,
        "action": "E",
        "period": {"start": _instant(at), "end": _instant(at)},
        "recorded": _instant(recorded),
        "outcome": "0",
        "agent": agents,
        "source": {
            "site": source_site,
            "observer": {"display": "Virtual Visits",
                         "identifier": {"system": "urn:ietf:rfc:3986", "value": source_url}},
            "type": [{"system": _SOURCE_TYPE, "code": "4", "display": "Application Server"}],
        },
        "entity": _entities(identifier, appointment_reference, appointment_local_id,
                            encounter_reference, patient_reference),
    }


def _agent(agent: Agent, *, requestor: bool) -> dict[str, Any]:
    who: dict[str, Any] = {}
    if agent.reference:
        who["reference"] = agent.reference
    if agent.participant_id is not None:
        who["identifier"] = {"system": PARTICIPANT_SYSTEM, "value": str(agent.participant_id)}
    if not who:
        raise ValueError("an agent needs an EHR reference or a participant id")
    return {
        "type": {"coding": [{"system": _PARTICIPATION, "code": "PART",
                             "display": "Participation"}]},
        "role": [{"coding": [{"system": ROLE_SYSTEM, "code": agent.role}]}],
        "who": who,
        "requestor": requestor,
    }


def _entities(identifier: str, appointment_reference: str | None, appointment_local_id: int,
              encounter_reference: str | None, patient_reference: str | None
              ) -> list[dict[str, Any]]:
    appointment_what: dict[str, Any] = (
        {"reference": appointment_reference} if appointment_reference else
        # Known only through HL7 so far: name it by our id rather than not at all.
        {"identifier": {"system": APPOINTMENT_SYSTEM, "value": str(appointment_local_id)}})
    entities = [_entity(appointment_what, role=("4", "Domain Resource"))]
    if encounter_reference:
        entities.append(_entity({"reference": encounter_reference}, role=("4", "Domain Resource")))
    if patient_reference:
        entities.append(_entity({"reference": patient_reference}, role=("1", "Patient"),
                                entity_type=("1", "Person")))
    entities.append({
        "what": {"identifier": {"system": EVENT_SYSTEM, "value": identifier}},
        "type": {"system": _ENTITY_TYPE, "code": "4", "display": "Other"},
        "description": "Virtual Visits event identifier",
    })
    return entities


def _entity(what: dict[str, Any], *, role: tuple[str, str],
            entity_type: tuple[str, str] = ("2", "System Object")) -> dict[str, Any]:
    return {"what": what,
            "type": {"system": _ENTITY_TYPE, "code": entity_type[0], "display": entity_type[1]},
            "role": {"system": _OBJECT_ROLE, "code": role[0], "display": role[1]}}


def _instant(value: datetime) -> str:
    """FHIR instant in UTC with a Z; naive datetimes are refused (we cannot know the zone)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime; use an aware one")
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")
