"""Socket.IO side of the patient's pages: recognising a patient's socket."""
from __future__ import annotations

from datetime import datetime, timezone

from extensions import db
from visits import realtime
from visits.errors import LinkExpired, LinkUnknown
from visits.links import participant_for_token
from visits.models import Participant


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
    """``auth = {"patient": true}`` from the join page: the participant the ``/j/`` link
    put in the HTTP session (``session["patient"]``), while that link is valid."""
    if not auth.get("patient"):
        return None
    held = session.get("patient")
    if not isinstance(held, dict) or not isinstance(held.get("participant_id"), int):
        return None
    try:
        expires = datetime.fromisoformat(str(held.get("expires_at")))
    except ValueError:
        return None
    if expires.tzinfo is None or expires <= datetime.now(timezone.utc):
        return None
    participant = db.session.get(Participant, held["participant_id"])
    if participant is None:
        return None
    return realtime.identity_of(participant, staff=False)
