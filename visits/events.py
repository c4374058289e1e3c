"""Connection-level Socket.IO events shared by every page of a visit, and presence upkeep."""
from __future__ import annotations

import logging
import os
import time
import traceback
from datetime import datetime, timezone

from flask import current_app, request, session
from flask_socketio import join_room, leave_room

# Socket.IO's own refusal carries its message to the client (`connect_error`); Python's
# builtin one reached pages as "Connection refused by server".
from socketio.exceptions import ConnectionRefusedError as Refused

from extensions import db, socketio
from ops.background import periodic
from ops.i18n import select_locale
from ops.payloads import BOOLEAN, NUMBER, expects, maybe, obj, one_of, text, whole
from visits import calls, chat, media, presence, realtime, replies, state, writer
from visits.errors import VisitError
from visits.models import Participant
from visits.quality import families as ua_families

log = logging.getLogger(__name__)


def _now() -> datetime:
    return datetime.now(timezone.utc)


@socketio.on("connect")
def connect(auth=None):
    """Visit pages connect with an ``auth`` payload their feature understands. A socket
    with no auth at all is anonymous (the standalone device test pings the server): it
    joins no room and every visit event refuses it. Credentials nobody recognises are
    refused outright.

    Staff get the whole picture (``visit_state``); a patient gets their own
    ``lobby_state``; the visit's staff hear a ``presence`` delta when the participant had
    no socket open (or was reconnecting). Rows are written behind (visits/writer.py)."""
    auth = auth if isinstance(auth, dict) else {}
    if not auth:
        return True
    writer.reads_only()
    identity = realtime.authenticate(auth, session)
    if identity is None:
        log.info("socket refused", extra={"reason": "not recognised"})
        raise Refused("not_authorized")
    if identity.is_staff:
        return _staff_connected(identity)
    context = identity.context or state.context(identity.participant_id)
    if context is None:
        raise Refused("not_authorized")
    now = _now()
    sid = request.sid
    realtime.remember(sid, identity, select_locale())
    _trim_environ(request.environ)
    for room in realtime.rooms_for(identity):
        join_room(room)
    if identity.link_id is not None:
        writer.link_used(identity.link_id, now)
    waiting_since = presence.waiting_since(identity.participant_id) or context.waiting_since
    if waiting_since is None and context.needs_admission and context.lobby_open(now):
        waiting_since = now
        presence.entered_lobby(identity.participant_id, now)
    change = presence.socket_opened(identity.participant_id, identity.appointment_id,
                                    False, sid, now,
                                    waiting_since=waiting_since if context.needs_admission
                                    else None)
    socketio.emit("lobby_state", state.lobby_state(context, now, waiting_since), to=sid)
    if change is not None:
        realtime.push_presence(change, skip_sid=sid,
                               lobby_entered_at=waiting_since if context.needs_admission
                               else None)
    else:
        # They already had a socket here: another tab or device. The newest takes over.
        _take_over(identity.participant_id, sid)
    writer.flush_if_immediate()
    return True


def _take_over(participant_id: int, sid: str) -> None:
    """The participant's older sockets on this process hear ``replaced`` (their page
    releases its camera and says where the visit went on), then are disconnected. The new
    socket is already counted, so staff hear no change: one person, still connected."""
    for older in presence.sids_of(participant_id) - {sid}:
        socketio.emit("replaced", {}, to=older)
        _leave_call(older)
        socketio.server.disconnect(older, namespace="/")


def _staff_connected(identity: realtime.Identity) -> bool:
    """A provider's visit page: the whole picture to this socket; the other staff hear
    a ``presence`` delta when this provider had no socket open."""
    now = _now()
    sid = request.sid
    realtime.remember(sid, identity, select_locale())
    _trim_environ(request.environ)
    for room in realtime.rooms_for(identity):
        join_room(room)
    change = presence.socket_opened(identity.participant_id, identity.appointment_id, True,
                                    sid, now)
    socketio.emit("visit_state", state.staff_view(identity.appointment_id, now), to=sid)
    if change is not None:
        realtime.push_presence(change, skip_sid=sid)
    writer.flush_if_immediate()
    return True


# The browser's (browser, OS) families, kept in the socket's environ for call quality.
CLIENT_FAMILIES = "vv.client_families"
# What a socket's later events still read from the environ Flask-SocketIO keeps for it
# (each event builds a request context from it). The rest — the cookie, user agent, accept
# and WebSocket headers — would stay in memory for the life of the connection.
_KEPT_ENVIRON = frozenset({
    "REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "SERVER_NAME",
    "SERVER_PORT", "SERVER_PROTOCOL", "HTTP_HOST", "REMOTE_ADDR", "REMOTE_PORT",
    "wsgi.url_scheme", "wsgi.version", "wsgi.input", "wsgi.errors", "wsgi.multithread",
    "wsgi.multiprocess", "wsgi.run_once", "flask.app", "saved_session", CLIENT_FAMILIES,
})


def _trim_environ(environ: dict) -> None:
    """Keep what later events need. The session was already copied for this socket's
    events (Flask-SocketIO's managed session), so without the cookie they also skip
    decoding it again. Of the User-Agent, only its coarse families stay (call quality)."""
    environ[CLIENT_FAMILIES] = ua_families(environ.get("HTTP_USER_AGENT"))
    for key in [key for key in environ if key not in _KEPT_ENVIRON]:
        del environ[key]


@socketio.on("disconnect")
def disconnect(*_args):
    """Staff hear "reconnecting" at once when it was the participant's last socket; the
    disconnect is final only after the grace period (see presence)."""
    sid = request.sid
    _leave_call(sid)
    if realtime.forget(sid) is None:
        return
    now = _now()
    change = presence.socket_closed(sid, now)
    # Several processes (they share Redis): a page of theirs may be open on another one
    # (one that took over from this page, or a reload that landed there); then staff
    # hear nothing. One query, only when a person's last socket here closes.
    if change is not None and current_app.config["REDIS_URL"] and writer.connected_elsewhere(
            [change.participant_id], now):
        change = None
    if change is not None:
        realtime.push_presence(change)
    writer.flush_if_immediate()


_last_flush = [0.0]  # monotonic time of the writer loop's last flush


@periodic(0.0, name="visits.writer")
def write_visit_changes() -> None:
    """Background loop body: wait for queued changes (or a grace period running out) and
    write them. A change after a quiet spell is written at once; while changes keep
    coming, at most one batch per PRESENCE_WRITE_DELAY_SECONDS, one transaction each."""
    config = current_app.config
    grace = float(config["PRESENCE_GRACE_SECONDS"])
    next_due = presence.queue_due_finalizations(_now(), grace)
    if not writer.pending():
        writer.wait_for_changes(min(next_due, 1.0) if next_due is not None else 1.0)
        presence.queue_due_finalizations(_now(), grace)
        if not writer.pending():
            return
        # Let what the change set going (a provider being told) go out before the write.
        socketio.sleep(0)
    gather = _last_flush[0] + float(config["PRESENCE_WRITE_DELAY_SECONDS"]) - time.monotonic()
    if gather > 0:
        socketio.sleep(gather)
    _last_flush[0] = time.monotonic()
    try:
        writer.flush()
    except Exception:
        log.exception("presence batch not written; retrying")
        socketio.sleep(1.0)


@periodic("PRESENCE_SWEEP_SECONDS")
def presence_upkeep() -> None:
    """Heartbeat, clear the sockets of dead processes, make overdue disconnects final
    (the safety net behind each process's own grace timers)."""
    now = _now()
    config = current_app.config
    presence.heartbeat(now)
    presence.reap_dead_processes(now, config["PROCESS_TIMEOUT_SECONDS"])
    presence.queue_due_finalizations(now, config["PRESENCE_GRACE_SECONDS"])
    presence.finalize_overdue(now, config["PRESENCE_GRACE_SECONDS"],
                              config["PRESENCE_RESTART_GRACE_SECONDS"])
    writer.flush(now)
    chat.sweep(now)


@socketio.on_error_default
def on_error(error):
    """Unexpected errors in any handler: logged, the client gets an error ack.

    The line names the event, the error's class and where it was raised (file, line,
    function), never the exception's message or the event's arguments: a driver's error
    quotes the statement's parameters, and arguments (and a connect's environ) may carry
    a token, a cookie or what a patient typed."""
    if isinstance(error, (ConnectionRefusedError, Refused)):
        # Flask-SocketIO routes a refused connect here too; it must still refuse.
        raise error
    event = getattr(request, "event", None)
    log.error("socket handler failed", extra={
        "event": event.get("message") if isinstance(event, dict) else None,
        "error": type(error).__name__, "where": _where(error)})
    db.session.rollback()
    return replies.refusal("server_error", request.sid)


def _where(error: BaseException, depth: int = 6) -> list[str]:
    """The innermost frames of the traceback as ``file:line function``: code, no data."""
    frames = traceback.extract_tb(error.__traceback__)[-depth:]
    return [f"{os.path.basename(frame.filename)}:{frame.lineno} {frame.name}" for frame in frames]


# --- the video call: signaling relay ----------------------------------------------------
# Sockets of this process that are in a call, by sid -> appointment id; a socket lives on
# one process, so its disconnect is seen here.
_in_call: dict[str, int] = {}


def _caller():
    identity = realtime.identity_for(request.sid)
    if identity is None:
        return None, None
    return identity, db.session.get(Participant, identity.participant_id)


# What a call's signaling may carry (RTCSessionDescription.toJSON(), RTCIceCandidate.toJSON()).
# A video SDP is a few KiB; 64 KiB leaves room for many codecs and simulcast.
_DESCRIPTION = obj(type=one_of("offer", "answer", "pranswer", "rollback"),
                   sdp=maybe(text(64 * 1024)))
_CANDIDATE = obj(candidate=text(2048), sdpMid=maybe(text(64)),
                 sdpMLineIndex=maybe(whole(0, 1024)), usernameFragment=maybe(text(256)))
_RESTART = obj(relay=maybe(BOOLEAN))


@socketio.on("call_join")
@expects()
def call_join(_data):
    """Sent by an admitted participant's page (or a provider's) to enter the call. The ack
    carries ICE servers; the others in the call hear ``call_peer_joined`` and each sends
    this socket an offer (newcomers never offer, so two sides never offer at once)."""
    identity, participant = _caller()
    if participant is None:
        return replies.refusal("not_in_visit", request.sid)
    try:
        calls.check_can_join(participant)
    except VisitError as error:
        return replies.refusal_for(error, request.sid)
    room = realtime.call_room(identity.appointment_id)
    join_room(room)
    _in_call[request.sid] = identity.appointment_id
    socketio.emit("call_peer_joined", {
        "sid": request.sid, "participant_id": participant.id, "role": participant.role,
        "display_name": participant.display_name}, to=room, skip_sid=request.sid)
    return {"ok": True, "sid": request.sid,
            "ice_servers": calls.ice_servers(current_app.config, participant.id, _now())}


@socketio.on("signal")
@expects(to=text(64), description=maybe(_DESCRIPTION), candidate=maybe(_CANDIDATE),
         restart=maybe(_RESTART))
def signal(data):
    """Relays an SDP description or ICE candidate to one other socket of the same call.
    The recipient hears ``signal`` with ``from`` set by the server, never by the sender."""
    identity = realtime.identity_for(request.sid)
    if identity is None or _in_call.get(request.sid) != identity.appointment_id:
        return replies.refusal("not_in_call", request.sid)
    target = calls.signal_target(identity.appointment_id, data["to"])
    if target is None:
        return replies.refusal("not_in_this_call", request.sid)
    message = {"from": request.sid, "from_participant": identity.participant_id}
    for key in ("description", "candidate", "restart"):
        if data.get(key) is not None:
            message[key] = data[key]
    socketio.emit("signal", message, to=data["to"])
    return {"ok": True}


@socketio.on("call_leave")
@expects()
def call_leave(_data):
    """Sent when someone hangs up; the others drop their connection to this socket."""
    _leave_call(request.sid)
    return {"ok": True}


@socketio.on("call_quality")
@expects(rtt_ms=maybe(NUMBER), jitter_ms=maybe(NUMBER), packet_loss_pct=maybe(NUMBER),
         bitrate_in_kbps=maybe(NUMBER), bitrate_out_kbps=maybe(NUMBER), relayed=maybe(BOOLEAN))
def call_quality(data):
    """Every 10 s from each browser in a call: RTT, jitter, loss, bitrates (from getStats)
    and whether the path goes through TURN."""
    identity = realtime.identity_for(request.sid)
    if identity is None or request.sid not in _in_call:
        return {"ok": False}
    families = request.environ.get(CLIENT_FAMILIES) or ua_families(
        request.environ.get("HTTP_USER_AGENT"))
    return {"ok": calls.record_quality(identity.participant_id, data, _now(),
                                       families=families)}


@socketio.on("report_media")
@expects(camera=one_of(*media.CAMERA_STATES), microphone=one_of(*media.MICROPHONE_STATES),
         webrtc=maybe(BOOLEAN))
def report_media(data):
    """Sent by a participant's page when its camera or microphone changes (on, off or
    muted, blocked by the browser, unavailable) and with every ``lobby_state`` it hears,
    with ``webrtc: false`` from a browser that cannot make calls; the visit's staff hear
    ``participant_media``."""
    identity = realtime.identity_for(request.sid)
    if identity is None:
        return replies.refusal("not_in_visit", request.sid)
    recorded = media.record(identity.participant_id, data["camera"], data["microphone"],
                            _now(), webrtc=data.get("webrtc") is not False)
    realtime.push_media(identity.appointment_id, recorded)
    return {"ok": True}


def _leave_call(sid: str) -> None:
    appointment_id = _in_call.pop(sid, None)
    if appointment_id is None:
        return
    room = realtime.call_room(appointment_id)
    leave_room(room, sid=sid)
    socketio.emit("call_peer_left", {"sid": sid}, to=room)


# --- chat -----------------------------------------------------------------------------

@socketio.on("chat_send")
# Cut and checked by visits.chat (1,000 characters once trimmed); the page stops at 1,000.
@expects(text=text(2 * chat.MAX_CHARS))
def chat_send(data):
    """Sent by a provider's page or an admitted person's with ``{"text": ...}``; everyone
    it reaches (visits/chat.py) hears ``chat_message``; the ack carries the message."""
    identity, participant = _caller()
    if participant is None:
        return replies.refusal("not_in_visit", request.sid)
    try:
        message, audience = chat.send(participant, data["text"], _now(),
                                      staff=identity.is_staff)
    except VisitError as error:
        return replies.refusal_for(error, request.sid)
    sent = message.as_dict()
    rooms = [realtime.staff_room(audience.appointment_id),
             *(realtime.participant_room(pid) for pid in audience.participant_ids)]
    socketio.emit("chat_message", sent, to=rooms)
    return {"ok": True, "message": sent}


@socketio.on("chat_history")
@expects()
def chat_history(_data):
    """Sent by a page when it connects; the ack carries what this person may read of the
    visit's chat so far (``messages``, oldest first)."""
    identity = realtime.identity_for(request.sid)
    if identity is None:
        return replies.refusal("not_in_visit", request.sid)
    kept = chat.messages(identity.appointment_id)
    if not kept:
        return {"ok": True, "messages": []}  # the usual case: no database query at all
    participant = db.session.get(Participant, identity.participant_id)
    if participant is None:
        return replies.refusal("not_in_visit", request.sid)
    readable = chat.readable_by(participant, kept, staff=identity.is_staff)
    return {"ok": True, "messages": [message.as_dict() for message in readable]}
