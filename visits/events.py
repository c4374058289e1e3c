"""Connection-level Socket.IO events shared by every page of a visit, and presence upkeep."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from flask import current_app, request, session
from flask_socketio import join_room, leave_room

from extensions import db, socketio
from ops.background import periodic
from visits import calls, lobby, presence, realtime
from visits.errors import VisitError
from visits.models import Participant

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@socketio.on("connect")
def connect(auth=None):
    """Visit pages connect with an ``auth`` payload their feature understands. A socket
    with no auth at all is anonymous (the standalone device test pings the server): it
    joins no room and every visit event refuses it. Credentials nobody recognises are
    refused outright."""
    auth = auth if isinstance(auth, dict) else {}
    if not auth:
        return True
    identity = realtime.authenticate(auth, session)
    if identity is None:
        log.info("socket refused", extra={"reason": "not recognised"})
        raise ConnectionRefusedError("not_authorized")
    participant = db.session.get(Participant, identity.participant_id)
    realtime.remember(request.sid, identity)
    for room in realtime.rooms_for(identity):
        join_room(room)
    now = _now()
    presence.socket_opened(participant, request.sid, now)
    lobby.enter_lobby(participant, now)
    # Everyone in the visit gets the new picture; the new socket gets its own state too.
    realtime.push_visit(identity.appointment_id, now)
    return True


@socketio.on("disconnect")
def disconnect(*_args):
    """The disconnect is final only after the grace period (see presence_upkeep)."""
    _leave_call(request.sid)
    identity = realtime.forget(request.sid)
    if identity is not None:
        presence.socket_closed(request.sid, _now())


@periodic("PRESENCE_SWEEP_SECONDS")
def presence_upkeep() -> None:
    """Heartbeat, clear the sockets of dead processes, make pending disconnects final."""
    now = _now()
    config = current_app.config
    presence.heartbeat(now)
    presence.reap_dead_processes(now, config["PROCESS_TIMEOUT_SECONDS"])
    changes = presence.finalize_disconnects(now, config["PRESENCE_GRACE_SECONDS"])
    for appointment_id in sorted({change.appointment_id for change in changes}):
        realtime.push_visit(appointment_id, now)


@socketio.on_error_default
def on_error(error):
    """Unexpected errors in any handler: logged (no payloads), the client gets an error ack."""
    if isinstance(error, ConnectionRefusedError):
        # Flask-SocketIO routes a refused connect here too; it must still refuse.
        raise error
    log.exception("socket handler failed", extra={"event": getattr(request, "event", None)})
    db.session.rollback()
    return {"ok": False, "error": "Something went wrong. Please try again."}


# --- the video call: signaling relay ----------------------------------------------------
# Sockets of this process that are in a call, by sid -> appointment id; a socket lives on
# one process, so its disconnect is seen here.
_in_call: dict[str, int] = {}


def _caller():
    identity = realtime.identity_for(request.sid)
    if identity is None:
        return None, None
    return identity, db.session.get(Participant, identity.participant_id)


@socketio.on("call_join")
def call_join(_data=None):
    """Sent by an admitted participant's page (or a provider's) to enter the call. The ack
    carries ICE servers; the others in the call hear ``call_peer_joined`` and each sends
    this socket an offer (newcomers never offer, so two sides never offer at once)."""
    identity, participant = _caller()
    if participant is None:
        return {"ok": False, "error": "Not part of a visit."}
    try:
        calls.check_can_join(participant)
    except VisitError as error:
        return {"ok": False, "error": str(error)}
    room = realtime.call_room(identity.appointment_id)
    join_room(room)
    _in_call[request.sid] = identity.appointment_id
    socketio.emit("call_peer_joined", {
        "sid": request.sid, "participant_id": participant.id, "role": participant.role,
        "display_name": participant.display_name}, to=room, skip_sid=request.sid)
    return {"ok": True, "sid": request.sid,
            "ice_servers": calls.ice_servers(current_app.config, participant.id, _now())}


@socketio.on("signal")
def signal(data=None):
    """Relays an SDP description or ICE candidate to one other socket of the same call.
    The recipient hears ``signal`` with ``from`` set by the server, never by the sender."""
    identity = realtime.identity_for(request.sid)
    if identity is None or _in_call.get(request.sid) != identity.appointment_id \
            or not isinstance(data, dict) or not isinstance(data.get("to"), str):
        return {"ok": False, "error": "Not in a call."}
    target = calls.signal_target(identity.appointment_id, data["to"])
    if target is None:
        return {"ok": False, "error": "That person is not in this call."}
    message = {"from": request.sid, "from_participant": identity.participant_id}
    for key in ("description", "candidate", "restart"):
        if key in data:
            message[key] = data[key]
    socketio.emit("signal", message, to=data["to"])
    return {"ok": True}


@socketio.on("call_leave")
def call_leave(_data=None):
    """Sent when someone hangs up; the others drop their connection to this socket."""
    _leave_call(request.sid)
    return {"ok": True}


@socketio.on("call_quality")
def call_quality(data=None):
    """Every 10 s from each browser in a call: RTT, jitter, loss, bitrates (from getStats)."""
    identity = realtime.identity_for(request.sid)
    if identity is None or request.sid not in _in_call or not isinstance(data, dict):
        return {"ok": False}
    return {"ok": calls.record_quality(identity.participant_id, data, _now())}


def _leave_call(sid: str) -> None:
    appointment_id = _in_call.pop(sid, None)
    if appointment_id is None:
        return
    room = realtime.call_room(appointment_id)
    leave_room(room, sid=sid)
    socketio.emit("call_peer_left", {"sid": sid}, to=room)
