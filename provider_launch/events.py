"""Socket.IO events of the visit page: providers admit, admit all, end the visit.

Every handler re-checks the sender against the database through ``visits.lobby``; what
the client says about itself is never trusted. Replies are acks: ``{"ok": true}`` or
``{"ok": false, "code": "...", "error": "..."}``, the error in the provider's language
(visits/replies.py).
"""
from __future__ import annotations

from datetime import datetime, timezone

from flask import current_app, request
from flask_babel import gettext as _

from extensions import db, socketio
from notifications import sending
from ops.payloads import ID, expects, is_id, maybe, text
from provider_launch.auth import staff_holder
from visits import calls, lobby, realtime, replies, state
from visits.errors import VisitError
from visits.models import Appointment


@realtime.authenticator
def staff_from_launch(auth: dict, session: dict) -> realtime.Identity | None:
    """A visit page socket: ``auth = {"visit": <appointment id>}`` and a launch session
    for that visit in the HTTP session, made by the SMART launch."""
    appointment_id = auth.get("visit")
    if not is_id(appointment_id):
        return None
    holder = staff_holder(appointment_id, session.get("launch_sessions") or {})
    if holder is None:
        return None
    return realtime.Identity(holder.participant_id, holder.appointment_id, holder.role,
                             holder.role == "provider")


def _staff_action(action) -> dict:
    identity = realtime.identity_for(request.sid)
    if identity is None or not identity.is_staff:
        return replies.refusal("staff_only", request.sid)
    now = datetime.now(timezone.utc)
    try:
        action(identity, now)
    except VisitError as error:
        db.session.rollback()
        return replies.refusal_for(error, request.sid)
    realtime.push_visit(identity.appointment_id, now)
    return {"ok": True}


@socketio.on("get_visit_state")
@expects()
def get_visit_state(_data):
    """Sent by a visit page that heard of someone it does not know yet; the ack carries
    the whole picture (``{"ok": true, "state": ...}``), as ``visit_state`` would."""
    identity = realtime.identity_for(request.sid)
    if identity is None or not identity.is_staff:
        return replies.refusal("staff_only", request.sid)
    return {"ok": True, "state": state.staff_view(identity.appointment_id,
                                                  datetime.now(timezone.utc))}


@socketio.on("admit")
@expects(participant_id=ID)
def admit(data):
    """Sent by a provider's visit page with ``{"participant_id": n}``; everyone in the
    visit hears the new state, the admitted person their ``lobby_state``."""
    target = data["participant_id"]
    return _staff_action(lambda who, now: lobby.admit(who.appointment_id, who.participant_id,
                                                      target, now))


@socketio.on("admit_all")
@expects()
def admit_all(_data):
    """Sent by a provider's visit page: admit everyone waiting."""
    return _staff_action(lambda who, now: lobby.admit_all(who.appointment_id,
                                                          who.participant_id, now))


@socketio.on("end_visit")
@expects()
def end_visit(_data):
    """Sent by a provider: ends the visit for everyone (patients see "ended", everyone in
    the call hears ``call_ended``)."""
    reply = _staff_action(lambda who, now: lobby.end_visit(who.appointment_id,
                                                           who.participant_id, now))
    if reply["ok"]:
        identity = realtime.identity_for(request.sid)
        socketio.emit("call_ended", {}, to=realtime.call_room(identity.appointment_id))
    return reply


@socketio.on("set_lobby_note")
# The note is cut to 200 characters (visits.lobby); the page's field stops at 200 too.
@expects(text=text(2000))
def set_lobby_note(data):
    """Sent by a provider with ``{"text": "Running 10 minutes late"}``; waiting people see
    it in their lobby at once. An empty text clears it."""
    note = data["text"]
    return _staff_action(lambda who, now: lobby.set_lobby_note(who.appointment_id,
                                                               who.participant_id, note, now))


@socketio.on("add_participant")
# Role and name are checked by the service, which words its refusals for the provider.
@expects(role=maybe(text(32)), display_name=maybe(text(200)), phone=maybe(text(40)))
def add_participant(data):
    """Sent by a provider with ``{"role": "guest"|"interpreter", "display_name": ...,
    "phone": optional mobile number}``; the ack carries the new person's join link to
    copy and, when a number was given, ``texted`` (bool) and ``text_error`` (why not).
    The number is used for this one text and never stored."""
    with replies.speaking_to(request.sid):  # the phone's and the text's refusals
        return _add_participant(data)


def _add_participant(data: dict) -> dict:
    phone_text = (data.get("phone") or "").strip()
    phone = None
    if phone_text:
        identity = realtime.identity_for(request.sid)
        appointment = db.session.get(Appointment, identity.appointment_id) if identity else None
        try:
            phone = sending.normalise_phone(
                phone_text, appointment.endpoint.default_phone_region if appointment else None)
        except sending.InvalidPhone as error:
            return {"ok": False, "code": "invalid_phone", "error": str(error)}
    created = {}

    def add(who, now):
        participant, token = calls.add_participant(
            who.appointment_id, who.participant_id, data.get("role") or "",
            data.get("display_name") or "", now)
        link = f"{current_app.config['PUBLIC_BASE_URL']}/j/{token}"
        created.update(participant_id=participant.id, link=link)
        if phone is not None:
            outcome = sending.send_invitation(participant, link, phone, now)
            created.update(texted=outcome.texted,
                           text_error=None if outcome.texted else _text_error(outcome))

    reply = _staff_action(add)
    return {**reply, **created}


def _text_error(outcome: sending.Outcome) -> str:
    """Why an invitation was not texted, in words a provider can act on."""
    if outcome.reason == "opted out":
        return _("Not texted: this number has opted out of texts (replied STOP). "
                 "Share the link another way.")
    return _("Not texted: the text could not be sent (%(reason)s). Share the link another way.",
             reason=outcome.reason or outcome.status)
