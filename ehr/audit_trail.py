"""The visit's audit trail for the EHR: AuditEvents queued when the domain announces a change.

``visits/`` sends signals (``visits/signals.py``) inside the transaction that records a
change; the receivers here add the write-back rows to that same transaction, so the
change and the promise to report it commit together (the transactional outbox), and
``visits/`` never reaches into ``ehr/``.

Presence changes arrive in batches (the presence writer records many connects at once
after a restart), so they are queued with a handful of queries and one multi-row INSERT
per batch, whatever its size.
"""
from __future__ import annotations

import functools
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import current_app

from ehr import auditevents
from ehr.models import LaunchSession, WritebackOutbox, WritebackResource, WritebackStatus
from ehr.outbox import enqueue_audit_event
from extensions import db
from visits import signals
from visits.models import Appointment, Participant, utcnow

_PRESENCE_ACTIONS = {"connected": "participant-connected",
                     "disconnected": "participant-disconnected"}
_FHIR_AGENTS = ("Practitioner/", "Patient/", "RelatedPerson/", "PractitionerRole/")


@signals.participant_admitted.connect
def _admitted(appointment: Appointment, *, participant: Participant, admitter: Participant,
              at: datetime) -> None:
    enqueue_audit_event(appointment, "participant-admitted", at=at,
                        event_key=f"admitted-{participant.id}", participant=participant,
                        actor=admitter)


@signals.visit_ended.connect
def _ended(appointment: Appointment, *, provider: Participant, at: datetime) -> None:
    enqueue_audit_event(appointment, "visit-ended", at=at, event_key=f"ended-{appointment.id}",
                        actor=provider)


@signals.presence_recorded.connect
def _presence(_sender, *, facts: list[signals.PresenceFact]) -> None:
    enqueue_presence(facts)


@functools.cache
def _about_query() -> sa.Select:
    """Built once: who each fact is about, their visit's EHR ids, its patient and the
    Encounter its latest launch named, in one query for a whole batch."""
    p, a, launches = Participant.__table__, Appointment.__table__, LaunchSession.__table__
    patient = sa.alias(p)
    patient_ref = (sa.select(sa.func.min(patient.c.ehr_user_id))
                   .where(patient.c.appointment_id == a.c.id, patient.c.role == "patient",
                          patient.c.ehr_user_id.like("Patient/%"))
                   .scalar_subquery())
    encounter_ref = (sa.select(launches.c.encounter_ref)
                     .where(launches.c.appointment_id == a.c.id,
                            launches.c.encounter_ref.is_not(None))
                     .order_by(launches.c.created_at.desc()).limit(1)
                     .scalar_subquery())
    return (sa.select(p.c.id, p.c.role, p.c.ehr_user_id, a.c.id.label("appointment_id"),
                      a.c.endpoint_id, a.c.ehr_appointment_id,
                      patient_ref.label("patient_ref"), encounter_ref.label("encounter_ref"))
            .join(a, a.c.id == p.c.appointment_id)
            .where(p.c.id.in_(sa.bindparam("ids", expanding=True))))


def enqueue_presence(facts: list[signals.PresenceFact]) -> int:
    """Queue one AuditEvent per presence fact in the caller's transaction; returns how many.

    Each fact's identifier comes from its own ``presence_events`` row
    (``participant-connected/presence-<id>``), so no two facts share one and no lookup for
    an existing row is needed. One query and one INSERT per batch, whatever its size."""
    if not facts:
        return 0
    people = {row.id: row for row in db.session.execute(
        _about_query(), {"ids": list({fact.participant_id for fact in facts})})}
    public = current_app.config["PUBLIC_BASE_URL"]
    site = urlsplit(public).hostname or public
    recorded, rows = utcnow(), []
    for fact in facts:
        person = people.get(fact.participant_id)
        if person is None:
            continue  # deleted since; nothing to say about them
        action = _PRESENCE_ACTIONS[fact.kind]
        identifier = auditevents.business_identifier(action, f"presence-{fact.event_id}")
        payload = auditevents.build(
            action, identifier=identifier, at=fact.at, recorded=recorded,
            appointment_reference=(f"Appointment/{person.ehr_appointment_id}"
                                   if person.ehr_appointment_id else None),
            appointment_local_id=person.appointment_id,
            encounter_reference=person.encounter_ref, patient_reference=person.patient_ref,
            subject=auditevents.Agent(role=person.role, reference=_reference(person.ehr_user_id),
                                      participant_id=person.id),
            source_url=public, source_site=site)
        rows.append(_outbox_row(person.endpoint_id, person.appointment_id, identifier, payload,
                                recorded))
    if rows:
        db.session.execute(_insert_query(), rows)
    return len(rows)


@functools.cache
def _insert_query() -> sa.Insert:
    return sa.insert(WritebackOutbox.__table__)


def _reference(ehr_user_id: str | None) -> str | None:
    """A FHIR reference we can vouch for; anything else stays out (the participant id
    still names them)."""
    return ehr_user_id if ehr_user_id and ehr_user_id.startswith(_FHIR_AGENTS) else None


def _outbox_row(endpoint_id: int, appointment_id: int, identifier: str, payload: dict[str, Any],
                now: datetime) -> dict[str, Any]:
    return {"endpoint_id": endpoint_id, "appointment_id": appointment_id,
            "resource_type": WritebackResource.AUDIT_EVENT.value,
            "business_identifier": identifier, "payload": payload,
            "status": WritebackStatus.PENDING.value, "attempts": 0, "next_attempt_at": now,
            "created_at": now}
