"""The video call: who may take part, ICE servers for browsers, call-quality samples,
and people a provider adds (guests, interpreters).

Media flows browser to browser (a mesh, fine up to four people with video); the server
only relays signaling, so it checks every message's sender and recipient against the
visit instead of trusting the page.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import math
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from extensions import db
from visits import lobby, presence, quality
from visits.errors import NotAllowed, VisitEnded
from visits.links import create_join_link
from visits.models import (
    CallQualitySample,
    LiveSocket,
    Participant,
    ParticipantRole,
)

# A mesh sends every stream to every peer: beyond this, video would choke a phone uplink.
MAX_VIDEO_PARTICIPANTS = 4
# Browsers report every 10 s; a faster sender is throttled rather than stored.
MIN_SAMPLE_INTERVAL = timedelta(seconds=5)
ADDABLE_ROLES = (ParticipantRole.GUEST, ParticipantRole.INTERPRETER)


def ice_servers(config, participant_id: int, now: datetime) -> list[dict]:
    """STUN, and TURN with credentials valid for TURN_TTL_SECONDS (coturn REST API:
    username ``<expiry>:<id>``, password base64(HMAC-SHA1(secret, username)))."""
    servers: list[dict] = []
    stun = [url.strip() for url in config["STUN_URLS"].split(",") if url.strip()]
    if stun:
        servers.append({"urls": stun})
    turn = [url.strip() for url in config["TURN_URLS"].split(",") if url.strip()]
    if turn and config["TURN_SECRET"]:
        expiry = int(now.timestamp()) + int(config["TURN_TTL_SECONDS"])
        username = f"{expiry}:vv{participant_id}"
        digest = hmac.new(config["TURN_SECRET"].encode(), username.encode(), hashlib.sha1).digest()
        servers.append({"urls": turn, "username": username,
                        "credential": base64.b64encode(digest).decode()})
    return servers


def may_join_call(participant: Participant) -> bool:
    """Admitted people and staff, while the visit is not ended."""
    if participant.appointment.ended_at is not None:
        return False
    return not lobby.needs_admission(participant)


def check_can_join(participant: Participant) -> None:
    """VisitEnded, or NotAllowed (``not_admitted``) for someone still in the lobby."""
    if participant.appointment.ended_at is not None:
        raise VisitEnded()
    if lobby.needs_admission(participant):
        raise NotAllowed(_l("Please wait until you are let in."), code="not_admitted")


def signal_target(appointment_id: int, sid: str) -> Participant | None:
    """The participant behind socket ``sid`` if it belongs to this visit and may be in the
    call; signaling to anything else is dropped."""
    # A socket of this process is known in memory (its row may still be queued).
    local = presence.participant_of(sid)
    if local is not None:
        row = db.session.get(Participant, local)
    else:
        row = db.session.execute(
            sa.select(Participant).join(LiveSocket, LiveSocket.participant_id == Participant.id)
            .where(LiveSocket.sid == sid)).scalar_one_or_none()
    if row is None or row.appointment_id != appointment_id or not may_join_call(row):
        return None
    return row


def _metric(value, low: float, high: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value if low <= value <= high else None


def record_quality(participant_id: int, sample: dict, now: datetime, *,
                   families: tuple[str | None, str | None] = (None, None)) -> bool:
    """Store one browser sample with its estimated MOS and the browser's coarse
    ``families`` (browser, OS), and add it to the participant's rollup; out-of-range or
    missing figures are kept as NULL. Returns False when throttled (a sample less than
    MIN_SAMPLE_INTERVAL ago)."""
    latest = db.session.execute(
        sa.select(sa.func.max(CallQualitySample.at))
        .where(CallQualitySample.participant_id == participant_id)).scalar()
    if latest is not None and now - latest < MIN_SAMPLE_INTERVAL:
        return False
    rtt = _metric(sample.get("rtt_ms"), 0, 60_000)
    jitter = _metric(sample.get("jitter_ms"), 0, 60_000)
    loss = _metric(sample.get("packet_loss_pct"), 0, 100)
    relayed = sample.get("relayed")
    row = CallQualitySample(
        participant_id=participant_id, at=now, rtt_ms=rtt, jitter_ms=jitter,
        packet_loss_pct=loss,
        bitrate_in_kbps=_metric(sample.get("bitrate_in_kbps"), 0, 1_000_000),
        bitrate_out_kbps=_metric(sample.get("bitrate_out_kbps"), 0, 1_000_000),
        mos=quality.estimate_mos(rtt, jitter, loss),
        relayed=relayed if isinstance(relayed, bool) else None,
        browser_family=families[0], os_family=families[1])
    db.session.add(row)
    db.session.flush()
    quality.add_to_rollup(row)
    db.session.commit()
    return True


def add_participant(appointment_id: int, provider_id: int, role: str, display_name: str,
                    now: datetime) -> tuple[Participant, str]:
    """A provider adds a guest or interpreter by name; returns them and their join token."""
    provider = lobby.provider_of(appointment_id, provider_id)
    name = " ".join((display_name or "").split())[:80]
    if role not in ADDABLE_ROLES:
        raise NotAllowed(_l("Choose guest or interpreter."), code="invalid_role")
    if not name:
        raise NotAllowed(_l("Enter the person's name."), code="name_required")
    appointment = provider.appointment
    participant = Participant(appointment=appointment, role=role, display_name=name)
    db.session.add(participant)
    db.session.flush()
    expires = appointment.end_at + timedelta(
        minutes=appointment.endpoint.link_valid_after_end_minutes)
    token = create_join_link(participant, expires_at=max(expires, now + timedelta(hours=1)))
    return participant, token
