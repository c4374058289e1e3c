"""Staff sessions from SMART launches: what the browser holds and how we check it.

The browser keeps only a random id per visit in its signed session cookie; the database
keeps that id's SHA-256 (``LaunchSession.id_hash``), so neither a stolen cookie secret
nor a database dump alone opens a visit. One cookie can hold several visits, because a
provider may have several open in EHR tabs.

A launch waiting for its user to sign in with the organization (staff single sign-on)
is parked in the cookie as well, encrypted with ``at_rest``, for ten minutes at most.
"""
from __future__ import annotations

import functools
import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any, MutableMapping

import sqlalchemy as sa

import at_rest
from ehr.models import EhrEndpoint, LaunchSession
from ehr.smart import LaunchContext
from extensions import db
from visits.models import Appointment, Participant, utcnow

SESSION_KEY = "launch_sessions"
# Enough for a busy clinic day of tabs, small enough to keep the cookie well under 4 KB.
MAX_REMEMBERED = 12
ACCESS_TOKEN_PURPOSE = "access-token"


def hash_launch_id(raw_id: str) -> str:
    return hashlib.sha256(raw_id.encode("utf-8")).hexdigest()


def create_launch_session(*, endpoint: EhrEndpoint, appointment: Appointment,
                          participant: Participant, fhir_user: str | None,
                          patient_ref: str | None, encounter_ref: str | None,
                          access_token: str | None, scope: str, expires_in: int,
                          now: datetime | None = None) -> str:
    """Add a LaunchSession (the caller commits) and return the raw id for the browser."""
    raw_id = secrets.token_urlsafe(32)
    db.session.add(LaunchSession(
        id_hash=hash_launch_id(raw_id), endpoint_id=endpoint.id, appointment_id=appointment.id,
        participant_id=participant.id, fhir_user=fhir_user, patient_ref=patient_ref,
        encounter_ref=encounter_ref, scope=scope,
        access_token_encrypted=(at_rest.encrypt(access_token, ACCESS_TOKEN_PURPOSE)
                                if access_token else None),
        expires_at=(now or utcnow()) + timedelta(seconds=expires_in)))
    return raw_id


def remember_launch(session: MutableMapping[str, Any], appointment_id: int, raw_id: str) -> None:
    """Keep ``raw_id`` as the browser's key to this visit, replacing an older one; the
    oldest visits are forgotten beyond MAX_REMEMBERED."""
    remembered = dict(session.get(SESSION_KEY) or {})
    remembered.pop(str(appointment_id), None)
    remembered[str(appointment_id)] = raw_id  # dicts keep order: newest last
    while len(remembered) > MAX_REMEMBERED:
        remembered.pop(next(iter(remembered)))
    session[SESSION_KEY] = remembered  # reassigned, so the session knows it changed


def staff_for_visit(appointment_id: int, launch_ids: dict[str, str] | None,
                    now: datetime | None = None) -> LaunchSession | None:
    """The live launch session this browser holds for the visit, or None (unknown id,
    another visit's id, or expired)."""
    raw_id = (launch_ids or {}).get(str(appointment_id))
    if not isinstance(raw_id, str) or not raw_id:
        return None
    launch = db.session.get(LaunchSession, hash_launch_id(raw_id))
    if launch is None or launch.appointment_id != appointment_id:
        return None
    if launch.expires_at <= (now or utcnow()):
        return None
    return launch


@dataclass(frozen=True)
class StaffHolder:
    """Who a browser's launch session for a visit stands for (sockets: one query)."""

    participant_id: int
    appointment_id: int
    role: str


@functools.cache
def _staff_query() -> sa.Select:
    """Built once: building a statement costs more than running it on SQLite."""
    launches, people = LaunchSession.__table__, Participant.__table__
    return (sa.select(launches.c.appointment_id, launches.c.expires_at, people.c.id, people.c.role)
            .join(people, people.c.id == launches.c.participant_id)
            .where(launches.c.id_hash == sa.bindparam("id_hash")))


def staff_holder(appointment_id: int, launch_ids: dict[str, str] | None,
                 now: datetime | None = None) -> StaffHolder | None:
    """``staff_for_visit`` as one Core query, for the visit page's socket."""
    raw_id = (launch_ids or {}).get(str(appointment_id))
    if not isinstance(raw_id, str) or not raw_id:
        return None
    row = db.session.execute(_staff_query(), {"id_hash": hash_launch_id(raw_id)}).one_or_none()
    if row is None or row.appointment_id != appointment_id or row.expires_at <= (now or utcnow()):
        return None
    return StaffHolder(row.id, row.appointment_id, row.role)


def access_token_of(launch: LaunchSession) -> str | None:
    """The EHR access token of a launch session, decrypted (None if none was kept or
    SECRET_KEY changed since)."""
    if launch.access_token_encrypted is None:
        return None
    try:
        return at_rest.decrypt(launch.access_token_encrypted, ACCESS_TOKEN_PURPOSE)
    except at_rest.InvalidToken:
        return None


# --- launches held for a staff sign-in --------------------------------------------------

HELD_KEY = "sso_held_launches"
HELD_PURPOSE = "held-launch"
# One per EHR tab waiting at the sign-in page; older ones are abandoned attempts.
MAX_HELD = 3
# As long as a pending SMART launch: the sign-in may need a password and MFA.
HELD_TTL_S = 600


@dataclass(frozen=True)
class HeldLaunch:
    """A launch the EHR completed, parked while its user signs in with the organization."""

    endpoint_id: int
    context: LaunchContext
    created_at: int

    def is_expired(self, now: float | None = None) -> bool:
        return (now or time.time()) > self.created_at + HELD_TTL_S


def hold_launch(session: MutableMapping[str, Any], endpoint_id: int,
                context: LaunchContext, now: float | None = None) -> str:
    """Park ``context`` in the session cookie, encrypted as a whole (the EHR access token
    and the patient reference must not be readable in a cookie), and return its key."""
    created_at = int(now or time.time())
    payload = json.dumps({"endpoint_id": endpoint_id, "created_at": created_at,
                          "context": asdict(context)})
    key = secrets.token_urlsafe(16)
    held = dict(session.get(HELD_KEY) or {})
    held[key] = at_rest.encrypt(payload, HELD_PURPOSE).decode("ascii")
    while len(held) > MAX_HELD:
        held.pop(next(iter(held)))
    session[HELD_KEY] = held
    return key


def take_held(session: MutableMapping[str, Any], key: str) -> HeldLaunch | None:
    """The launch parked under ``key``, removed (single use); None if unknown or unreadable."""
    held = dict(session.get(HELD_KEY) or {})
    token = held.pop(key, None)
    session[HELD_KEY] = held
    if not isinstance(token, str):
        return None
    try:
        data = json.loads(at_rest.decrypt(token.encode("ascii"), HELD_PURPOSE))
        created_at = int(data["created_at"])
        context = LaunchContext(**data["context"])
    except (at_rest.InvalidToken, ValueError, KeyError, TypeError):
        return None
    # The token's lifetime was counted from the EHR's answer, not from now.
    waited = max(0, int(time.time()) - created_at)
    return HeldLaunch(endpoint_id=int(data["endpoint_id"]), created_at=created_at,
                      context=replace(context, expires_in=max(1, context.expires_in - waited)))
