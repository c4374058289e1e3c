"""Provider launches waiting for the EHR's answer, kept on the server by their OAuth state.

The session cookie carries the pending launch (PKCE verifier, nonce) and stays the only
thing that completes one, so an answer is only ever accepted in the browser that asked.
Inside a cross-site EHR frame a browser may refuse that cookie (a blocked third-party
cookie): the callback then arrives with a state the cookie does not hold. The row kept
here lets the callback tell that from an unknown or replayed state and offer the same
launch in a window of its own, where the cookie is first-party.

The state is stored as its SHA-256, as launch session ids are, and the EHR's ``launch``
value encrypted at rest: a database dump cannot answer or restart a launch. Each row is
used once and lives as long as the pending launch (``ehr.smart.PENDING_TTL_S``); expired
rows are deleted whenever a later launch begins.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

import at_rest
from ehr.models import LaunchState
from ehr.smart import PENDING_TTL_S
from extensions import db
from visits.models import utcnow

LAUNCH_PURPOSE = "launch-state"


def hash_state(state: str) -> str:
    return hashlib.sha256(state.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class SeenLaunch:
    """A launch this server began with the state the callback brought back."""

    endpoint_id: int
    iss: str
    launch: str = field(repr=False)
    expired: bool


def keep_state(state: str, *, endpoint_id: int, iss: str, launch: str,
               now: datetime | None = None) -> None:
    """Record a launch sent to the EHR's sign-in, and delete expired ones. Commits."""
    now = now or utcnow()
    db.session.execute(sa.delete(LaunchState).where(LaunchState.expires_at < now)
                       .execution_options(synchronize_session=False))
    db.session.add(LaunchState(
        state_hash=hash_state(state), endpoint_id=endpoint_id, iss=iss,
        launch_encrypted=at_rest.encrypt(launch, LAUNCH_PURPOSE), created_at=now,
        expires_at=now + timedelta(seconds=PENDING_TTL_S)))
    db.session.commit()


def take_state(state: str | None, now: datetime | None = None) -> SeenLaunch | None:
    """The launch begun with ``state``, deleted so it is used once (commits); None when
    this server never began it, it was used already, or it cannot be read any more
    (``SECRET_KEY`` changed)."""
    if not state or len(state) > 200:
        return None
    # One statement, so two answers racing with the same state cannot both have it.
    row = db.session.execute(
        sa.delete(LaunchState).where(LaunchState.state_hash == hash_state(state))
        .returning(LaunchState.endpoint_id, LaunchState.iss, LaunchState.launch_encrypted,
                   LaunchState.expires_at)
        .execution_options(synchronize_session=False)).one_or_none()
    db.session.commit()
    if row is None:
        return None
    try:
        launch = at_rest.decrypt(row.launch_encrypted, LAUNCH_PURPOSE)
    except at_rest.InvalidToken:
        return None
    return SeenLaunch(endpoint_id=row.endpoint_id, iss=row.iss, launch=launch,
                      expired=row.expires_at <= (now or utcnow()))
