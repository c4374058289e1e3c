"""Presence: who is connected to a visit right now, shared by every server process.

A participant is *connected* while at least one of their sockets is open on any process
(``live_sockets`` rows). When the last one closes, ``sockets_gone_at`` is set; the
disconnect becomes final only after the grace period passes without a new socket, so a
reload or a network blip does not flap. Each process heartbeats in ``server_processes``;
the others remove the sockets of a process whose heartbeat stopped, and presence then
turns disconnected as for any other lost connection.

State changes are conditional UPDATEs (``WHERE presence != 'connected'``...), so when two
processes race, exactly one records the event and queues its AuditEvent write-back.
"""
from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from extensions import db
from visits.models import (
    LiveSocket,
    Participant,
    PresenceEvent,
    PresenceKind,
    PresenceState,
    ServerProcess,
)

_AUDIT_ACTIONS = {PresenceKind.CONNECTED: "participant-connected",
                  PresenceKind.DISCONNECTED: "participant-disconnected"}


@dataclass(frozen=True)
class PresenceChange:
    participant_id: int
    appointment_id: int
    presence: str
    at: datetime


_process: dict[str, object] = {}


def process_id() -> str:
    """This process's id: host, pid and a random part (pids are reused after restarts)."""
    if _process.get("pid") != os.getpid():  # a fork (gunicorn) gets its own id
        _process.update(pid=os.getpid(), registered=False,
                        id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
    return str(_process["id"])


def heartbeat(now: datetime) -> None:
    """Tell the other processes this one is alive."""
    updated = db.session.execute(
        sa.update(ServerProcess).where(ServerProcess.process_id == process_id())
        .values(heartbeat_at=now))
    if updated.rowcount == 0:
        db.session.add(ServerProcess(process_id=process_id(), started_at=now, heartbeat_at=now))
    db.session.commit()
    _process["registered"] = True


def socket_opened(participant: Participant, sid: str, now: datetime) -> PresenceChange | None:
    """Record a new socket; returns the change when the participant became connected."""
    if not _process.get("registered") or _process.get("pid") != os.getpid():
        heartbeat(now)  # before any socket, or another process could reap it as orphaned
    db.session.add(LiveSocket(sid=sid, participant_id=participant.id, process_id=process_id(),
                              connected_at=now))
    became_connected = db.session.execute(
        sa.update(Participant)
        .where(Participant.id == participant.id,
               Participant.presence != PresenceState.CONNECTED)
        .values(presence=PresenceState.CONNECTED, presence_since=now, sockets_gone_at=None)
    ).rowcount == 1
    change = None
    if became_connected:
        change = _record(participant, PresenceKind.CONNECTED, now)
    else:  # another tab, or back within the grace period: the pending disconnect is void
        db.session.execute(sa.update(Participant).where(Participant.id == participant.id)
                           .values(sockets_gone_at=None))
    db.session.commit()
    return change


def socket_closed(sid: str, now: datetime) -> int | None:
    """Forget a socket; returns its participant id. The disconnect is final only later."""
    row = db.session.get(LiveSocket, sid)
    if row is None:
        return None
    participant_id = row.participant_id
    db.session.delete(row)
    db.session.flush()
    _mark_gone_if_no_sockets([participant_id], now)
    db.session.commit()
    return participant_id


def finalize_disconnects(now: datetime, grace_seconds: float) -> list[PresenceChange]:
    """Turn participants without sockets for longer than the grace period disconnected."""
    cutoff = now - timedelta(seconds=grace_seconds)
    candidates = db.session.execute(
        sa.select(Participant).where(Participant.presence == PresenceState.CONNECTED,
                                     Participant.sockets_gone_at.is_not(None),
                                     Participant.sockets_gone_at <= cutoff)
    ).scalars().all()
    changes = []
    for participant in candidates:
        gone_at = participant.sockets_gone_at
        won = db.session.execute(
            sa.update(Participant)
            .where(Participant.id == participant.id,
                   Participant.presence == PresenceState.CONNECTED,
                   Participant.sockets_gone_at.is_not(None),
                   Participant.sockets_gone_at <= cutoff,
                   ~sa.exists().where(LiveSocket.participant_id == Participant.id))
            .values(presence=PresenceState.DISCONNECTED, presence_since=gone_at,
                    sockets_gone_at=None)
            .execution_options(synchronize_session=False)
        ).rowcount == 1
        if won:
            changes.append(_record(participant, PresenceKind.DISCONNECTED, gone_at))
        db.session.commit()
    return changes


def reap_dead_processes(now: datetime, timeout_seconds: float) -> int:
    """Remove sockets held by processes whose heartbeat stopped; returns how many."""
    cutoff = now - timedelta(seconds=timeout_seconds)
    alive = sa.select(ServerProcess.process_id).where(ServerProcess.heartbeat_at >= cutoff)
    orphaned = db.session.execute(
        sa.select(LiveSocket.sid, LiveSocket.participant_id)
        .where(LiveSocket.process_id != process_id(),
               LiveSocket.process_id.not_in(alive),
               LiveSocket.connected_at < cutoff)
    ).all()
    if orphaned:
        db.session.execute(sa.delete(LiveSocket).where(
            LiveSocket.sid.in_([sid for sid, _ in orphaned])))
        _mark_gone_if_no_sockets({participant for _, participant in orphaned}, now)
    db.session.execute(sa.delete(ServerProcess).where(ServerProcess.heartbeat_at < cutoff,
                                                      ServerProcess.process_id != process_id()))
    db.session.commit()
    return len(orphaned)


def _mark_gone_if_no_sockets(participant_ids, now: datetime) -> None:
    for participant_id in participant_ids:
        db.session.execute(
            sa.update(Participant)
            .where(Participant.id == participant_id,
                   Participant.presence == PresenceState.CONNECTED,
                   Participant.sockets_gone_at.is_(None),
                   ~sa.exists().where(LiveSocket.participant_id == Participant.id))
            .values(sockets_gone_at=now)
            .execution_options(synchronize_session=False))


def _record(participant: Participant, kind: PresenceKind, at: datetime) -> PresenceChange:
    """The event row and its AuditEvent write-back, in the caller's transaction."""
    from ehr.outbox import enqueue_audit_event

    event = PresenceEvent(participant_id=participant.id, kind=kind, at=at,
                          process_id=process_id())
    db.session.add(event)
    db.session.flush()
    enqueue_audit_event(participant.appointment, _AUDIT_ACTIONS[kind], at=at,
                        event_key=f"presence-{event.id}", participant=participant)
    return PresenceChange(participant.id, participant.appointment_id, kind.value, at)
