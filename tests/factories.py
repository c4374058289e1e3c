"""Small factories for visit rows, shared by integration and browser tests."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from ehr.models import EhrEndpoint, LaunchSession
from ehr.services import ensure_endpoint
from extensions import db
from visits.links import create_join_link
from visits.models import Appointment, Participant


@dataclass
class Visit:
    appointment: Appointment
    provider: Participant
    patient: Participant


def make_endpoint(name: str = "clinic", base: str = "https://ehr.example.org/fhir") -> EhrEndpoint:
    return ensure_endpoint(name, base, client_id="virtual-visits", scopes="launch openid",
                           approved_by="test")


def make_visit(endpoint: EhrEndpoint | None = None, ehr_id: str = "appt-1") -> Visit:
    endpoint = endpoint or make_endpoint()
    start = datetime.now(timezone.utc).replace(microsecond=0)
    appointment = Appointment(endpoint=endpoint, ehr_appointment_id=ehr_id, start_at=start,
                              end_at=start + timedelta(minutes=30), timezone="America/Chicago",
                              department_display="Family Medicine")
    provider = Participant(appointment=appointment, role="provider",
                           ehr_user_id=f"Practitioner/{ehr_id}-dr", display_name="Dr. Quinn Example")
    patient = Participant(appointment=appointment, role="patient",
                          ehr_user_id=f"Patient/{ehr_id}-pt")
    db.session.add_all([appointment, provider, patient])
    db.session.commit()
    return Visit(appointment, provider, patient)


def add_participant(visit: Visit, role: str, ehr_user_id: str | None = None,
                    display_name: str | None = None) -> Participant:
    participant = Participant(appointment=visit.appointment, role=role, ehr_user_id=ehr_user_id,
                              display_name=display_name)
    db.session.add(participant)
    db.session.commit()
    return participant


def make_launch_session(participant: Participant, access_token: str | None = None) -> str:
    """A completed launch for ``participant``; returns the raw id the browser would hold."""
    import at_rest

    raw = secrets.token_urlsafe(32)
    db.session.add(LaunchSession(
        id_hash=hashlib.sha256(raw.encode()).hexdigest(),
        endpoint_id=participant.appointment.endpoint_id,
        appointment_id=participant.appointment_id, participant_id=participant.id,
        fhir_user=participant.ehr_user_id, scope="launch openid",
        access_token_encrypted=at_rest.encrypt(access_token, "access-token") if access_token else None,
        expires_at=datetime.now(timezone.utc) + timedelta(hours=1)))
    db.session.commit()
    return raw


def join_token(participant: Participant) -> str:
    return create_join_link(participant,
                            expires_at=datetime.now(timezone.utc) + timedelta(hours=3))
