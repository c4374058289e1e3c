"""Socket.IO plumbing for visits: who a socket is, its rooms, and what gets pushed.

Rooms: ``visit:<id>:staff`` (providers and interpreters of a visit: full picture),
``participant:<id>`` (one person's own sockets). A patient's socket joins only its own
room, so it can never receive another visit's events or staff-only data.

Features register *authenticators*: each turns the ``auth`` payload of a connecting
socket (plus the HTTP session) into an Identity, or returns None when it does not apply.

Pushes: staff get a full ``visit_state`` when their socket connects and after anything
but presence changes; presence changes reach them as small ``presence`` deltas (one
participant: connected, reconnecting or disconnected), built from memory without a
database read. Patients get their own ``lobby_state``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

import sqlalchemy as sa

from extensions import db, socketio
from visits import media, presence, state, writer
from visits.models import Participant


@dataclass(frozen=True)
class Identity:
    participant_id: int
    appointment_id: int
    role: str
    is_staff: bool
    # The join link the socket proved itself with, if any (its use is recorded).
    link_id: int | None = None
    # The participant's state, when the authenticator read it with the credentials (one
    # query instead of two); only for the connect, never kept with the socket.
    context: state.Context | None = field(default=None, compare=False, repr=False)


Authenticator = Callable[[dict, dict], "Identity | None"]
_authenticators: list[Authenticator] = []
# Identities of the sockets connected to this process, by sid.
_sockets: dict[str, Identity] = {}
# The language each socket's replies are in (its page's, chosen at connect), by sid.
_locales: dict[str, str] = {}


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


def identity_of(participant: Participant, *, staff: bool, link_id: int | None = None) -> Identity:
    """``staff`` comes from how the socket proved itself (an EHR launch), not from the row:
    someone who joined by link gets a participant's view whatever their role."""
    return Identity(participant.id, participant.appointment_id, participant.role,
                    staff and participant.is_staff, link_id)


def remember(sid: str, identity: Identity, locale: str = "en") -> None:
    _sockets[sid] = replace(identity, context=None) if identity.context else identity
    _locales[sid] = locale


def forget(sid: str) -> Identity | None:
    _locales.pop(sid, None)
    return _sockets.pop(sid, None)


def locale_for(sid: str) -> str | None:
    """The language of the page behind socket ``sid`` (None: not a visit socket here)."""
    return _locales.get(sid)


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


def push_presence(change: presence.Change, *, skip_sid: str | None = None,
                  lobby_entered_at: datetime | None = None) -> None:
    """Tell the visit's staff one participant's new presence."""
    socketio.emit("presence", {
        "participant_id": change.participant_id,
        "presence": change.presence,
        "since": change.since.isoformat(),
        "lobby_entered_at": lobby_entered_at.isoformat() if lobby_entered_at else None,
    }, to=staff_room(change.appointment_id), skip_sid=skip_sid)


def push_media(appointment_id: int, recorded: media.MediaState) -> None:
    """Tell the visit's staff one participant's camera and microphone state."""
    socketio.emit("participant_media", {"participant_id": recorded.participant_id,
                                        **recorded.as_dict()},
                  to=staff_room(appointment_id))


def push_visit(appointment_id: int, now: datetime) -> None:
    """Send the current picture to the visit's staff and each participant their own state."""
    socketio.emit("visit_state", state.staff_view(appointment_id, now),
                  to=staff_room(appointment_id))
    push_lobby_states(appointment_id, now)


def push_lobby_states(appointment_id: int, now: datetime) -> None:
    """Each participant who is not a provider hears their own ``lobby_state`` (one query)."""
    for ctx in state.visit_contexts(appointment_id):
        socketio.emit("lobby_state", state.lobby_state(ctx, now),
                      to=participant_room(ctx.participant_id))


def _announce_recorded(_app, result: writer.FlushResult) -> None:
    """After a batch is written: staff hear the disconnects made final (and corrections
    for anyone still connected elsewhere); patients hear when their provider came or left."""
    from visits.models import utcnow

    now = utcnow()
    visits_with_staff_change = set()
    for fact in result.disconnected:
        media.forget(fact.participant_id)
        socketio.emit("presence", {"participant_id": fact.participant_id,
                                   "presence": "disconnected", "since": fact.at.isoformat(),
                                   "lobby_entered_at": None},
                      to=staff_room(fact.appointment_id))
    for fact in result.connected + result.disconnected:
        if fact.role == "provider":
            visits_with_staff_change.add(fact.appointment_id)
    if result.still_connected:
        p = Participant.__table__
        for participant_id, appointment_id, since in db.session.execute(
                sa.select(p.c.id, p.c.appointment_id, p.c.presence_since)
                .where(p.c.id.in_(result.still_connected))):
            socketio.emit("presence", {"participant_id": participant_id,
                                       "presence": "connected", "since": since.isoformat()
                                       if since else None, "lobby_entered_at": None},
                          to=staff_room(appointment_id))
    for appointment_id in sorted(visits_with_staff_change):
        push_lobby_states(appointment_id, now)
    for participant_id in result.elsewhere:
        # Opened again here while a page of theirs is on another process: the newest takes
        # over there too (that page hears ``replaced`` and disconnects itself). Providers'
        # pages are left alone, as on one process.
        here = sorted(presence.sids_of(participant_id))
        if here and not presence.is_staff_here(participant_id):
            socketio.emit("replaced", {}, to=participant_room(participant_id), skip_sid=here)


writer.flushed.connect(_announce_recorded)
