"""Socket.IO side of the patient's pages: recognising a patient's socket."""
from __future__ import annotations

from datetime import datetime, timezone

from patient_join.services import SESSION_KEY, NoPatientSession, check_pass
from visits import realtime
from visits.errors import LinkExpired, LinkUnknown
from visits.links import participant_for_token


@realtime.authenticator
def patient_from_join_link(auth: dict, session: dict) -> realtime.Identity | None:
    """``auth = {"join_token": ...}``: the token of the participant's own join link."""
    token = auth.get("join_token")
    if not isinstance(token, str):
        return None
    try:
        participant = participant_for_token(token, datetime.now(timezone.utc))
    except (LinkUnknown, LinkExpired):
        return None
    return realtime.identity_of(participant, staff=False)


@realtime.authenticator
def patient_from_session(auth: dict, session: dict) -> realtime.Identity | None:
    """``auth = {"patient": true}`` from the join page: the participant whose pass the
    ``/j/`` link or the portal launch put in the HTTP session (``session["patient"]``),
    while it has not expired and its link is neither revoked nor expired."""
    if auth.get("patient") is not True:
        return None
    try:
        participant = check_pass(session.get(SESSION_KEY), datetime.now(timezone.utc))
    except (NoPatientSession, LinkUnknown, LinkExpired):
        return None
    return realtime.identity_of(participant, staff=False)
