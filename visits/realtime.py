"""Socket.IO plumbing for visits: who a socket is, its rooms, and what gets pushed.

Rooms: ``visit:<id>:staff`` (providers and interpreters of a visit: full picture),
``participant:<id>`` (one person's own sockets). A patient's socket joins only its own
room, so it can never receive another visit's events or staff-only data.

Features register *authenticators*: each turns the ``auth`` payload of a connecting
socket (plus the HTTP session) into an Identity, or returns None when it does not apply.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from extensions import db, socketio
from visits import state
from visits.models import Appointment, Participant


@dataclass(frozen=True)
class Identity:
    participant_id: int
    appointment_id: int
    role: str
    is_staff: bool


Authenticator = Callable[[dict, dict], "Identity | None"]
_authenticators: list[Authenticator] = []
# Identities of the sockets connected to this process, by sid.
_sockets: dict[str, Identity] = {}


def authenticator(func: Authenticator) -> Authenticator:
    """Register a way to recognise a connecting socket (staff launch, join link...)."""
    _authenticators.append(func)
    return func


def authenticate(auth: dict, session: dict) -> Identity | None:
    for recognise in _authenticators:
        identity = recognise(auth, session)
        if identity is not None:
            return identity
    return None


def identity_of(participant: Participant, *, staff: bool) -> Identity:
    """``staff`` comes from how the socket proved itself (an EHR launch), not from the row:
    someone who joined by link gets a participant's view whatever their role."""
    return Identity(participant.id, participant.appointment_id, participant.role,
                    staff and participant.is_staff)


def remember(sid: str, identity: Identity) -> None:
    _sockets[sid] = identity


def forget(sid: str) -> Identity | None:
    return _sockets.pop(sid, None)


def identity_for(sid: str) -> Identity | None:
    return _sockets.get(sid)


def staff_room(appointment_id: int) -> str:
    return f"visit:{appointment_id}:staff"


def participant_room(participant_id: int) -> str:
    return f"participant:{participant_id}"


def call_room(appointment_id: int) -> str:
    """Sockets currently in the visit's video call (signaling fan-out)."""
    return f"visit:{appointment_id}:call"


def rooms_for(identity: Identity) -> list[str]:
    rooms = [participant_room(identity.participant_id)]
    if identity.is_staff:
        rooms.append(staff_room(identity.appointment_id))
    return rooms


def push_visit(appointment_id: int, now) -> None:
    """Send the current picture to the visit's staff and each participant their own state."""
    appointment = db.session.get(Appointment, appointment_id)
    if appointment is None:
        return
    socketio.emit("visit_state", state.staff_view(appointment, now),
                  to=staff_room(appointment_id))
    for participant in appointment.participants:
        if participant.role != "provider":
            socketio.emit("lobby_state", state.participant_view(participant, now),
                          to=participant_room(participant.id))
