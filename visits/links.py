"""Join links: random tokens given to a participant, stored only as a hash."""
from __future__ import annotations

import secrets
from datetime import datetime

from extensions import db
from visits.errors import LinkExpired, LinkUnknown
from visits.models import JoinLink, Participant

# 32 bytes = 256 random bits, well over the 128 the design asks for; URL-safe base64.
TOKEN_BYTES = 32


def create_join_link(participant: Participant, *, expires_at: datetime) -> str:
    """Issue a new link for ``participant``; returns the token, which is not kept."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    db.session.add(JoinLink(participant=participant, token_hash=JoinLink.hash_token(token),
                            expires_at=expires_at))
    db.session.commit()
    return token


def participant_for_token(token: str, now: datetime) -> Participant:
    """The participant a token belongs to; LinkUnknown or LinkExpired otherwise."""
    if not token or len(token) > 200:
        raise LinkUnknown("This link isn't valid.")
    link = db.session.execute(
        db.select(JoinLink).filter_by(token_hash=JoinLink.hash_token(token))).scalar_one_or_none()
    if link is None:
        raise LinkUnknown("This link isn't valid.")
    if not link.is_usable_at(now):
        raise LinkExpired("This visit has ended.")
    link.last_used_at = now
    db.session.commit()
    return link.participant
