"""Join links: random tokens given to a participant, stored only as a hash."""
from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from extensions import db
from visits.errors import LinkExpired, LinkUnknown
from visits.models import Appointment, JoinLink, Participant

# 32 bytes = 256 random bits, well over the 128 the design asks for; URL-safe base64.
TOKEN_BYTES = 32
# Longer than any token we issue; anything longer is not worth hashing.
MAX_TOKEN_LENGTH = 200


def default_expiry(appointment: Appointment) -> datetime:
    """Links work until the endpoint's grace period after the visit's scheduled end, so a
    visit that runs late can still be rejoined, and an old text message stops working."""
    grace = timedelta(minutes=appointment.endpoint.link_valid_after_end_minutes)
    return appointment.end_at + grace


def create_join_link(participant: Participant, *,
                     expires_at: datetime | None = None) -> str:
    """Issue a new link for ``participant``; returns the token, which is not kept.

    ``expires_at`` defaults to ``default_expiry`` of the participant's appointment."""
    token = add_join_link(participant, expires_at=expires_at)
    db.session.commit()
    return token


def add_join_link(participant: Participant, *, expires_at: datetime | None = None) -> str:
    """Like ``create_join_link`` but in the caller's transaction (no commit): the HL7
    intake issues links for its texts inside the savepoint that applies the message."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    if expires_at is None:
        expires_at = default_expiry(participant.appointment)
    db.session.add(JoinLink(participant=participant, token_hash=JoinLink.hash_token(token),
                            expires_at=expires_at))
    return token


def extend_to_schedule(appointment: Appointment) -> int:
    """After the visit moved, every link already texted for it works until the new
    default expiry at least, so yesterday's text still opens a visit moved later.
    Never shortens a link. Returns how many changed; no commit."""
    expiry = default_expiry(appointment)
    ids = [p.id for p in appointment.participants]
    if not ids:
        return 0
    return db.session.execute(
        db.update(JoinLink).where(JoinLink.participant_id.in_(ids),
                                  JoinLink.expires_at < expiry)
        .values(expires_at=expiry).execution_options(synchronize_session=False)).rowcount


def check_link(link_id: int, participant_id: int, now: datetime) -> JoinLink:
    """A link already opened (its id kept in a browser session) is still good: it exists,
    belongs to that participant, is not revoked and has not expired."""
    link = db.session.get(JoinLink, link_id)
    if link is None or link.participant_id != participant_id:
        raise LinkUnknown()
    if not link.is_usable_at(now):
        raise LinkExpired()
    return link


# --- sockets: who holds a link, in one query ------------------------------------------------

@dataclass(frozen=True)
class LinkHolder:
    """The participant a link (or a pass made from one) stands for."""

    participant_id: int
    appointment_id: int
    role: str
    link_id: int | None
    expires_at: datetime | None = None  # the link's


@functools.cache
def _holder_query(by: str) -> sa.Select:
    """Built once per lookup kind: building a statement costs more than running it."""
    links, people = JoinLink.__table__, Participant.__table__
    return (sa.select(links.c.id, links.c.revoked_at, links.c.expires_at, people.c.id,
                      people.c.appointment_id, people.c.role)
            .join(people, people.c.id == links.c.participant_id)
            .where(links.c[by] == sa.bindparam("key")))


def holder_of_token(token: str, now: datetime) -> LinkHolder:
    """Who a join link's token stands for, without touching the row: the caller records
    the use (behind, visits/writer.py). LinkUnknown or LinkExpired otherwise. Only the
    hash is looked up, so timing says nothing about the token."""
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise LinkUnknown()
    row = db.session.execute(_holder_query("token_hash"),
                             {"key": JoinLink.hash_token(token)}).one_or_none()
    return _holder(row, now)


def _holder(row, now: datetime) -> LinkHolder:
    if row is None:
        raise LinkUnknown()
    link_id, revoked_at, expires_at, participant_id, appointment_id, role = row
    if revoked_at is not None or now >= expires_at:
        raise LinkExpired()
    return LinkHolder(participant_id, appointment_id, role, link_id, expires_at)


def holder_of_participant(participant_id: int) -> LinkHolder | None:
    """A pass without a link (a portal launch): the participant, if still there."""
    people = Participant.__table__
    row = db.session.execute(sa.select(people.c.appointment_id, people.c.role)
                             .where(people.c.id == participant_id)).one_or_none()
    return LinkHolder(participant_id, row[0], row[1], None) if row else None
