"""What each side of a visit is told: the staff's full picture, a patient's own state.

Staff snapshots carry participant ids, roles, presence and the lobby; provider display
names only (the patient's name is read live from FHIR by the visit page and never
leaves the EHR's own token). A patient's state carries nothing about anyone else
except whether a provider is there.
"""
from __future__ import annotations

from datetime import datetime

from extensions import db
from visits import lobby
from visits.models import Appointment, Participant, ParticipantRole, PresenceState


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def staff_view(appointment: Appointment, now: datetime) -> dict:
    """The whole visit, for providers and interpreters."""
    db.session.refresh(appointment)
    waiting = lobby.waiting_entries(appointment)
    return {
        "appointment_id": appointment.id,
        "ended": appointment.ended_at is not None,
        "server_time": now.isoformat(),
        "lobby_note": appointment.lobby_note,
        "participants": [{
            "id": p.id,
            "role": p.role,
            "display_name": p.display_name,
            "presence": p.presence,
            "presence_since": _iso(p.presence_since),
            "admitted": p.admitted_at is not None or p.role not in lobby.WAITS_IN_LOBBY,
            "device_test": _latest_device_test(p),
        } for p in appointment.participants],
        "lobby": [{"participant_id": participant.id, "role": participant.role,
                   "entered_at": _iso(entry.entered_at)} for participant, entry in waiting],
    }


def _latest_device_test(participant: Participant) -> dict | None:
    """The participant's latest device-test grade, so staff can call ahead. Read through
    the backref device_test/ adds, so visits/ does not import device_test/."""
    results = getattr(participant, "device_test_results", None) or []
    if not results:
        return None
    latest = max(results, key=lambda r: (r.created_at, r.id))
    return {"overall": latest.overall, "at": _iso(latest.created_at)}


def participant_view(participant: Participant, now: datetime) -> dict:
    """A patient's or guest's own state: waiting, admitted or ended."""
    db.session.refresh(participant)
    appointment = participant.appointment
    if appointment.ended_at is not None:
        state = "ended"
    elif lobby.needs_admission(participant):
        state = "waiting"
    else:
        state = "admitted"
    entry = lobby.open_entry(participant)
    return {
        "state": state,
        "server_time": now.isoformat(),
        "waiting_since": _iso(entry.entered_at if entry else None),
        "note": appointment.lobby_note,
        "provider_present": any(p.role == ParticipantRole.PROVIDER
                                and p.presence == PresenceState.CONNECTED
                                for p in appointment.participants),
    }
