"""Presence: who is connected to a visit right now, decided in memory, recorded behind.

A participant is *connected* while at least one of their sockets is open on any process.
Each process keeps the sockets it holds in memory (``_held``), so the hot questions —
is this their first socket? was that their last? — need no database, and the provider
is told at once. The database stays the record every process shares (``live_sockets``,
the participant's presence columns, ``presence_events``), written in batches by
``visits/writer.py``; the decisions that must happen exactly once across processes are
conditional UPDATEs there.

When a participant's last socket here closes, staff see "reconnecting" at once; the
disconnect becomes final after ``PRESENCE_GRACE_SECONDS`` without a new socket anywhere
(a timer here, the sweep as a safety net), so a reload or a network blip does not flap
and nothing reaches the EHR. Each process heartbeats in ``server_processes``; the others
remove the sockets of a process whose heartbeat stopped, and its participants then get
the same grace period. A restart of the only process is the same case: its participants
stay connected while their pages reconnect to the new process.
"""
from __future__ import annotations

import heapq
import logging
import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from extensions import db
from visits import writer
from visits.models import LiveSocket, Participant, ServerProcess

log = logging.getLogger(__name__)

_participants = Participant.__table__
_sockets = LiveSocket.__table__


@dataclass
class _Held:
    """This process's view of one participant with sockets here (or just gone)."""

    appointment_id: int
    is_staff: bool
    sids: set[str] = field(default_factory=set)
    # Their last socket here closed then; they are "reconnecting" until the grace is over.
    gone_at: datetime | None = None
    # Their open lobby place, once known here (it may still be queued for the database).
    waiting_since: datetime | None = None
    # When their first socket here opened (the record may say earlier: another process).
    since: datetime | None = None


@dataclass(frozen=True)
class Change:
    """What staff should be told about a participant (a ``presence`` delta)."""

    participant_id: int
    appointment_id: int
    presence: str  # connected | reconnecting
    since: datetime
    is_staff: bool


_lock = threading.RLock()
_held: dict[int, _Held] = {}
_owner: dict[str, int] = {}  # sid -> participant id
_staff: dict[int, set[int]] = {}  # appointment id -> providers with a socket here
_timers: list[tuple[datetime, int]] = []  # (grace over at, participant id), a heap
_process: dict[str, object] = {}


def process_id() -> str:
    """This process's id: host, pid and a random part (pids are reused after restarts)."""
    if _process.get("pid") != os.getpid():  # a fork (gunicorn) gets its own id
        _process.update(pid=os.getpid(), registered=False,
                        id=f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}")
    return str(_process["id"])


# --- sockets ----------------------------------------------------------------------------

def socket_opened(participant_id: int, appointment_id: int, is_staff: bool, sid: str,
                  now: datetime, *, waiting_since: datetime | None = None) -> Change | None:
    """Record a new socket; returns what staff should hear, or None (another tab)."""
    ensure_registered(now)
    with _lock:
        held = _held.get(participant_id)
        if held is None:
            held = _held[participant_id] = _Held(appointment_id, is_staff)
        news = not held.sids  # first socket here, or back while reconnecting
        if news and held.gone_at is None:
            held.since = now
        held.sids.add(sid)
        if is_staff:
            _staff.setdefault(appointment_id, set()).add(participant_id)
        held.gone_at = None
        held.waiting_since = waiting_since or held.waiting_since
        _owner[sid] = participant_id
    writer.socket_opened(sid, participant_id, process_id(), now)
    return Change(participant_id, appointment_id, "connected", now, is_staff) if news else None


def socket_closed(sid: str, now: datetime) -> Change | None:
    """Forget a socket; when it was the participant's last here, they are reconnecting
    (returned, for staff) and the disconnect is final after the grace period."""
    with _lock:
        participant_id = _owner.pop(sid, None)
        held = _held.get(participant_id) if participant_id is not None else None
        if held is None:
            return None
        held.sids.discard(sid)
        last = not held.sids
        if last:
            held.gone_at = now
            _forget_staff(held, participant_id)
    writer.socket_closed(sid)
    if not last:
        return None
    writer.participant_gone(participant_id, now)
    with _lock:
        heapq.heappush(_timers, (now, participant_id))
    return Change(participant_id, held.appointment_id, "reconnecting", now, held.is_staff)


def is_staff_here(participant_id: int) -> bool:
    """Whether this process holds the participant as staff (a provider's visit page)."""
    held = _held.get(participant_id)
    return held is not None and held.is_staff


def waiting_since(participant_id: int) -> datetime | None:
    """The lobby place this process knows for the participant (written or still queued)."""
    held = _held.get(participant_id)
    return held.waiting_since if held else None


def entered_lobby(participant_id: int, at: datetime) -> None:
    """A new lobby place: written behind, known here at once (set by ``socket_opened``)."""
    writer.lobby_entered(participant_id, at)


def left_lobby(participant_id: int) -> None:
    """Admitted, or the visit ended: forget the cached place."""
    held = _held.get(participant_id)
    if held is not None:
        held.waiting_since = None


def gone_at(participant_id: int) -> datetime | None:
    held = _held.get(participant_id)
    return held.gone_at if held else None


def since_here(participant_id: int) -> datetime | None:
    held = _held.get(participant_id)
    return held.since if held else None


def presence_here(participant_id: int) -> str | None:
    """connected | reconnecting for a participant this process knows, else None."""
    held = _held.get(participant_id)
    if held is None:
        return None
    return "connected" if held.sids else ("reconnecting" if held.gone_at else None)


def staff_here(appointment_id: int) -> bool:
    """Whether a provider of the visit has a socket open on this process."""
    return bool(_staff.get(appointment_id))


def _forget_staff(held: _Held, participant_id: int) -> None:
    providers = _staff.get(held.appointment_id)
    if providers is not None:
        providers.discard(participant_id)
        if not providers:
            del _staff[held.appointment_id]


def sids_of(participant_id: int) -> set[str]:
    held = _held.get(participant_id)
    return set(held.sids) if held else set()


def participant_of(sid: str) -> int | None:
    return _owner.get(sid)


# --- the grace period -------------------------------------------------------------------

def queue_due_finalizations(now: datetime, grace_seconds: float) -> float | None:
    """Hand participants whose grace is over to the writer; returns seconds until the next
    one is due (None: no timer)."""
    grace = timedelta(seconds=grace_seconds)
    due = []
    with _lock:
        while _timers and _timers[0][0] + grace <= now:
            gone_at, participant_id = heapq.heappop(_timers)
            held = _held.get(participant_id)
            if held is None or held.sids or held.gone_at != gone_at:
                continue  # back since, or a newer timer covers them
            del _held[participant_id]
            due.append(participant_id)
        wait = (_timers[0][0] + grace - now).total_seconds() if _timers else None
    if due:
        writer.finalize(due)
    return wait


def finalize_overdue(now: datetime, grace_seconds: float, restart_grace_seconds: float = 0.0,
                     limit: int = 500) -> int:
    """The safety net: participants whose grace is over according to the database (a
    process died, or its timer was lost), whoever's they were. Uses the index on
    ``sockets_gone_at``, so it costs what changed, not the size of the table.

    A process that has just started waits ``restart_grace_seconds`` first: after a
    restart, pages come back at their own pace (a browser retries up to 5 s apart), and
    those that do must not be reported as gone."""
    started = _process.get("started")
    if started is not None and (now - started).total_seconds() < restart_grace_seconds:
        return 0
    cutoff = now - timedelta(seconds=grace_seconds)
    overdue = list(db.session.execute(
        sa.select(_participants.c.id)
        .where(_participants.c.sockets_gone_at <= cutoff,
               _participants.c.presence == "connected")
        .limit(limit)).scalars())
    if overdue:
        with _lock:
            for participant_id in overdue:
                held = _held.get(participant_id)
                if held is not None and not held.sids:
                    del _held[participant_id]
        writer.finalize(overdue)
    return len(overdue)


# --- processes --------------------------------------------------------------------------

def ensure_registered(now: datetime) -> None:
    """Heartbeat once before this process's first socket, or another could reap it."""
    if not _process.get("registered") or _process.get("pid") != os.getpid():
        heartbeat(now)


# One heartbeat at a time: the first sockets after a start arrive together, and on
# PostgreSQL each waits for the database, so without it they would all insert the row.
_heartbeat_lock = threading.Lock()


def heartbeat(now: datetime) -> None:
    """Tell the other processes this one is alive. If they took it for dead (a long pause)
    and removed its sockets, put them back, so its participants do not stay gone."""
    with _heartbeat_lock:
        if _process.get("registered") and _process.get("heartbeat_at") == now:
            return
        _heartbeat(now)


def _heartbeat(now: datetime) -> None:
    updated = db.session.execute(
        sa.update(ServerProcess).where(ServerProcess.process_id == process_id())
        .values(heartbeat_at=now))
    _process.setdefault("started", now)
    if updated.rowcount == 0:
        db.session.add(ServerProcess(process_id=process_id(), started_at=now, heartbeat_at=now))
        if _process.get("registered"):
            log.warning("this process was taken for dead; restoring its sockets")
            _restore_sockets(now)
    db.session.commit()
    _process["registered"] = True
    _process["heartbeat_at"] = now


def _restore_sockets(now: datetime) -> None:
    with _lock:
        held = [(sid, pid) for pid, h in _held.items() for sid in h.sids]
    db.session.execute(sa.delete(_sockets).where(_sockets.c.process_id == process_id()))
    for sid, participant_id in held:
        writer.socket_opened(sid, participant_id, process_id(), now)


def reap_dead_processes(now: datetime, timeout_seconds: float) -> int:
    """Remove the sockets of processes whose heartbeat stopped; their participants start
    their grace period now. Returns how many sockets were removed. Reads only the small
    ``server_processes`` table unless a process died."""
    cutoff = now - timedelta(seconds=timeout_seconds)
    dead = list(db.session.execute(
        sa.select(ServerProcess.process_id)
        .where(ServerProcess.heartbeat_at < cutoff,
               ServerProcess.process_id != process_id())).scalars())
    if not dead:
        return 0
    orphaned = db.session.execute(
        sa.delete(_sockets).where(_sockets.c.process_id.in_(dead))
        .returning(_sockets.c.participant_id)).scalars().all()
    _mark_gone(set(orphaned), now)
    db.session.execute(sa.delete(ServerProcess).where(ServerProcess.process_id.in_(dead)))
    db.session.commit()
    log.info("sockets of stopped processes removed",
             extra={"processes": len(dead), "sockets": len(orphaned)})
    return len(orphaned)


def leave(now: datetime) -> int:
    """This process is stopping: remove its sockets and its heartbeat, and start the grace
    period of everyone who had no other socket, so whoever serves them next knows at once
    (instead of after PROCESS_TIMEOUT_SECONDS). Returns how many sockets it held."""
    mine = db.session.execute(
        sa.delete(_sockets).where(_sockets.c.process_id == process_id())
        .returning(_sockets.c.participant_id)).scalars().all()
    _mark_gone(set(mine), now)
    db.session.execute(sa.delete(ServerProcess).where(ServerProcess.process_id == process_id()))
    db.session.commit()
    return len(mine)


def _mark_gone(participant_ids: set[int], now: datetime, chunk: int = 1000) -> None:
    """Start the grace period of those among them with no socket left anywhere: one
    UPDATE per thousand, whatever the number (a process leaving held thousands)."""
    ids = sorted(participant_ids)
    for start in range(0, len(ids), chunk):
        db.session.execute(
            sa.update(_participants)
            .where(_participants.c.id.in_(ids[start:start + chunk]),
                   _participants.c.presence == "connected",
                   _participants.c.sockets_gone_at.is_(None),
                   ~sa.exists().where(_sockets.c.participant_id == _participants.c.id))
            .values(sockets_gone_at=now))


def reset_for_tests() -> None:
    """Forget this process's in-memory state (tests build many apps in one process)."""
    with _lock:
        _held.clear()
        _owner.clear()
        _staff.clear()
        _timers.clear()
        _process.clear()
