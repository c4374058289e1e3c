"""Socket.IO side of the patient's pages: recognising a patient's socket, and the rating
given once the visit has ended.

Both ways read one row (no ORM objects) and write nothing: the link's use is queued
behind with the socket's other rows (visits/writer.py)."""
from __future__ import annotations

from datetime import datetime, timezone

from flask import request
from socketio.exceptions import ConnectionRefusedError as Refused

from extensions import socketio
from ops.payloads import expects, whole
from patient_join import guesses
from patient_join.services import SESSION_KEY, NoPatientSession, PatientPass
from visits import ratings, realtime, replies, state
from visits.errors import LinkExpired, LinkUnknown, VisitError
from visits.links import LinkHolder, holder_of_participant, holder_of_token
from visits.models import JoinLink


def _identity(holder: LinkHolder | None, *, link_opened: bool = False
              ) -> realtime.Identity | None:
    if holder is None:
        return None
    # Whoever joins by link gets a participant's view, whatever their role. A token is a
    # use of the link (recorded); a pass was recorded when its link was opened.
    return realtime.Identity(holder.participant_id, holder.appointment_id, holder.role,
                             False, holder.link_id if link_opened else None)


@realtime.authenticator
def patient_from_join_link(auth: dict, session: dict) -> realtime.Identity | None:
    """``auth = {"join_token": ...}``: the token of the participant's own join link.

    An unknown token is a failed guess, counted with the ``/j/<token>`` ones from the
    same address (patient_join/guesses.py); over the limit the socket is refused with
    ``too_many_attempts``. A valid token always connects."""
    token = auth.get("join_token")
    if not isinstance(token, str):
        return None
    try:
        return _identity(holder_of_token(token, datetime.now(timezone.utc)), link_opened=True)
    except LinkExpired:
        return None
    except LinkUnknown:
        if guesses.failed_guess(guesses.client_address()) is not None:
            raise Refused("too_many_attempts") from None
        return None


@realtime.authenticator
def patient_from_session(auth: dict, session: dict) -> realtime.Identity | None:
    """``auth = {"patient": true}`` from the join page: the participant whose pass the
    ``/j/`` link or the portal launch put in the HTTP session (``session["patient"]``),
    while it has not expired and its link is neither revoked nor expired."""
    if auth.get("patient") is not True:
        return None
    now = datetime.now(timezone.utc)
    try:
        patient_pass = PatientPass.from_session(session.get(SESSION_KEY))
    except NoPatientSession:
        return None
    if now >= patient_pass.expires_at:
        return None
    if patient_pass.link_id is not None:
        return _holding_link(patient_pass, now)
    holder = holder_of_participant(patient_pass.participant_id)
    if holder is None or holder.appointment_id != patient_pass.appointment_id:
        return None
    return _identity(holder)


def _holding_link(patient_pass: PatientPass, now: datetime) -> realtime.Identity | None:
    """A pass from a ``/j/`` link: the participant's state and the link (``check_link``'s
    rules: it exists, is theirs, is neither revoked nor expired) in one query, the state
    handed on to the connect so it is not read twice."""
    found = state.context_with_link(patient_pass.participant_id, patient_pass.link_id)
    if found is None:
        return None
    context, link = found
    if (link.participant_id != patient_pass.participant_id
            or not JoinLink.is_usable_at(link, now)  # reads revoked_at and expires_at
            or context.appointment_id != patient_pass.appointment_id):
        return None
    return realtime.Identity(context.participant_id, context.appointment_id, context.role,
                             False, context=context)


@socketio.on("rate_visit")
@expects(score=whole(ratings.LOWEST, ratings.HIGHEST))
def rate_visit(data):
    """From a patient's or guest's page once the visit has ended: their one-tap rating
    (1 to 5, no text). Only that page hears the reply; the socket limits (ops/socket_limits)
    bound how often, and a second tap replaces the first score."""
    identity = realtime.identity_for(request.sid)
    if identity is None or identity.is_staff:
        return replies.refusal("not_in_visit", request.sid)
    try:
        ratings.rate(identity.participant_id, data["score"], datetime.now(timezone.utc))
    except VisitError as error:
        return replies.refusal_for(error, request.sid)
    return {"ok": True}
