"""Socket.IO side of the patient's pages: recognising a patient's socket."""
from __future__ import annotations

from datetime import datetime, timezone

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
    return realtime.identity_of(participant)
