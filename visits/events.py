"""Connection-level Socket.IO events shared by every page of a visit, and presence upkeep."""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from flask import current_app, request, session
from flask_socketio import join_room

from extensions import db, socketio
from ops.background import periodic
from visits import lobby, presence, realtime
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
