"""Write-behind for the busiest rows of a visit: sockets, presence, lobby places, link use.

Connects and disconnects come by the hundred per second after a restart. Written one by
one, each costs a transaction and several ORM statements (measured: 5 ms of CPU for a
patient's connect); queued here and written in batches, one statement per kind with
``executemany``, the same work costs about 0.06 ms (see docs/performance.md).

``flush()`` applies everything queued, in one transaction, in an order that gives the
right result whatever happened in between (a socket that opened and closed in the same
batch, a reconnect within the batch):

1. new ``live_sockets`` rows, then the closed ones deleted;
2. participants who connected: one conditional UPDATE ``... WHERE presence != 'connected'
   RETURNING id`` decides who *became* connected; only those get a ``presence_events``
   row, and ``signals.presence_recorded`` lets the EHR write-back add its AuditEvents to
   the same transaction. Across processes, exactly one UPDATE wins. Of those already
   connected, one with a socket on another live process has opened the visit again
   elsewhere (``FlushResult.elsewhere``: a patient's older page is told);
3. participants whose last socket closed get ``sockets_gone_at`` (only when no live
   socket of theirs is left on any process);
4. new lobby places, links used;
5. disconnects made final: the grace period passed with no socket anywhere; an open
   lobby place of theirs is closed then (``left_at``), so a later return waits anew.

When the server runs, a background loop flushes ``PRESENCE_WRITE_DELAY_SECONDS`` after the
first queued change (default 100 ms); with 0 (the tests), the socket handlers flush at
once. Anything that reads these rows (a staff snapshot, admit) flushes first, so this
process always reads its own writes; other processes see them a flush later.
"""
from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import SimpleNamespace

import sqlalchemy as sa
from blinker import Namespace
from flask import current_app

from extensions import db
from visits import signals
from visits.models import (
    JoinLink,
    LiveSocket,
    LobbyEntry,
    Participant,
    PresenceEvent,
    ServerProcess,
)

log = logging.getLogger(__name__)

_participants = Participant.__table__
_sockets = LiveSocket.__table__
_events = PresenceEvent.__table__
_lobby = LobbyEntry.__table__
_links = JoinLink.__table__
_processes = ServerProcess.__table__
_no_live_socket = ~sa.exists().where(_sockets.c.participant_id == _participants.c.id)

# Sent after a flush committed, with result=FlushResult; realtime pushes from it.
flushed = Namespace().signal("visit-writes-flushed")


@dataclass
class _Batch:
    opened: list[dict] = field(default_factory=list)  # live_sockets rows
    closed: list[str] = field(default_factory=list)  # sids
    connected: dict[int, datetime] = field(default_factory=dict)  # participant -> first connect
    gone: dict[int, datetime] = field(default_factory=dict)  # participant -> last socket closed
    lobby: dict[int, datetime] = field(default_factory=dict)  # participant -> entered_at
    links_used: dict[int, datetime] = field(default_factory=dict)  # link id -> when
    routes: dict[int, str] = field(default_factory=dict)  # participant -> how they joined
    finalize: set[int] = field(default_factory=set)  # participants whose grace may be over

    def __bool__(self) -> bool:
        return bool(self.opened or self.closed or self.connected or self.gone or self.lobby
                    or self.links_used or self.routes or self.finalize)


@dataclass(frozen=True)
class FlushResult:
    connected: list[signals.PresenceFact]
    disconnected: list[signals.PresenceFact]
    # Asked to finalize but a socket of theirs is open somewhere: still connected.
    still_connected: list[int]
    # Already connected through another live process: a second tab or device there (on
    # this process, visits.events takes over at once).
    elsewhere: list[int] = field(default_factory=list)


_lock = threading.Lock()
_batch = _Batch()
_wake = threading.Event()  # a gevent Event once the server has monkey-patched threading


def socket_opened(sid: str, participant_id: int, process_id: str, at: datetime) -> None:
    with _lock:
        _batch.opened.append({"sid": sid, "participant_id": participant_id,
                              "process_id": process_id, "connected_at": at})
        _batch.connected.setdefault(participant_id, at)
        _batch.gone.pop(participant_id, None)
    _changed()


def socket_closed(sid: str) -> None:
    with _lock:
        _batch.closed.append(sid)
    _changed()


def participant_gone(participant_id: int, at: datetime) -> None:
    """Their last socket on this process closed at ``at`` (final only after the grace)."""
    with _lock:
        _batch.gone[participant_id] = at
    _changed()


def lobby_entered(participant_id: int, at: datetime) -> None:
    with _lock:
        _batch.lobby.setdefault(participant_id, at)
    _changed()


def link_used(link_id: int, at: datetime) -> None:
    with _lock:
        _batch.links_used[link_id] = at
    _changed()


def joined_by(participant_id: int, route: str) -> None:
    """How the participant last opened the visit (``participants.join_route``)."""
    with _lock:
        _batch.routes[participant_id] = route
    _changed()


def finalize(participant_ids) -> None:
    """Make these disconnects final if the grace period has passed with no socket."""
    with _lock:
        _batch.finalize.update(participant_ids)
    _changed()


def pending() -> bool:
    return bool(_batch)


def _changed() -> None:
    _wake.set()


def wait_for_changes(timeout: float) -> bool:
    """Block (the writer loop) until something is queued or ``timeout`` passes."""
    woken = _wake.wait(timeout)
    _wake.clear()
    return woken


def flush_if_immediate() -> None:
    """Socket handlers call this last: writes at once when the write delay is 0."""
    if _immediate():
        flush()


def _immediate() -> bool:
    return float(current_app.config["PRESENCE_WRITE_DELAY_SECONDS"]) <= 0


def reads_only() -> None:
    """The caller (a request or socket event) writes only through this module, behind, in
    the writer's own transaction: on PostgreSQL its queries then run in autocommit, each
    on its own, which spares the BEGIN and ROLLBACK round trips around them (two of a
    patient socket's five, with the pool's ping). Called before the caller's first query.
    With writes at once (a write delay of 0, as most tests run) the caller's
    ``flush_if_immediate`` shares its session, which then keeps its transaction."""
    if not _immediate() and db.session.get_bind().dialect.name == "postgresql":
        db.session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


# One flush at a time: on PostgreSQL a flush waits for the database and another greenlet
# could start the next one; committed out of order, a socket's close could land before
# its open and leave a row behind.
_flush_lock = threading.RLock()


def flush(now: datetime | None = None) -> FlushResult:
    """Write everything queued in one transaction; see the module docstring for the order.
    On a database error the batch is put back in front of what came since, and raised."""
    with _flush_lock:
        return _flush(now)


def _flush(now: datetime | None) -> FlushResult:
    global _batch
    with _lock:
        batch, _batch = _batch, _Batch()
    if not batch:
        return FlushResult([], [], [])
    from visits.models import utcnow

    now = now or utcnow()
    try:
        result = _apply(batch, now)
        db.session.commit()
    except sa.exc.IntegrityError:
        # A row that can never be written (its participant was deleted meanwhile) must not
        # block every later batch; presence heals on the next connect or sweep.
        db.session.rollback()
        log.warning("presence batch dropped", extra={"sockets": len(batch.opened),
                                                      "participants": len(batch.connected)})
        return FlushResult([], [], [])
    except Exception:
        db.session.rollback()
        _requeue(batch)
        raise
    if result.connected or result.disconnected or result.still_connected or result.elsewhere:
        flushed.send(current_app._get_current_object(), result=result)
    return result


def _requeue(batch: _Batch) -> None:
    global _batch
    with _lock:
        newer, _batch = _batch, batch
        _batch.opened.extend(newer.opened)
        _batch.closed.extend(newer.closed)
        for name in ("connected", "lobby"):
            for key, value in getattr(newer, name).items():
                getattr(_batch, name).setdefault(key, value)
        _batch.gone.update(newer.gone)
        for key in newer.connected:
            _batch.gone.pop(key, None)
        _batch.links_used.update(newer.links_used)
        _batch.routes.update(newer.routes)
        _batch.finalize |= newer.finalize


@functools.cache
def _statements() -> SimpleNamespace:
    """Every statement a flush runs, built once: building one costs more than running it
    on SQLite (their compiled form and cache key are kept with them)."""
    p, ids = _participants, sa.bindparam("ids", expanding=True)
    who = (p.c.id, p.c.appointment_id, p.c.role)
    return SimpleNamespace(
        open=sa.insert(_sockets),
        close=sa.delete(_sockets).where(_sockets.c.sid.in_(sa.bindparam("sids", expanding=True))),
        # Who became connected: once across processes, whatever raced with it.
        connected=sa.update(p).where(p.c.id.in_(ids), p.c.presence != "connected")
        .values(presence="connected", presence_since=sa.bindparam("since"),
                sockets_gone_at=None).returning(*who),
        back=sa.update(p).where(p.c.id.in_(ids), p.c.sockets_gone_at.is_not(None))
        .values(sockets_gone_at=None),
        gone=sa.update(p).where(p.c.id == sa.bindparam("pid"), p.c.presence == "connected",
                                p.c.sockets_gone_at.is_(None), _no_live_socket)
        .values(sockets_gone_at=sa.bindparam("at")),
        lobby=sa.insert(_lobby),
        link_used=sa.update(_links).where(_links.c.id == sa.bindparam("link_id"))
        .values(last_used_at=sa.bindparam("at")),
        route=sa.update(p).where(p.c.id == sa.bindparam("pid"))
        .values(join_route=sa.bindparam("route")),
        # Whose disconnect is final: the grace passed with no socket on any process.
        disconnected=sa.update(p).where(p.c.id.in_(ids), p.c.presence == "connected",
                                        p.c.sockets_gone_at.is_not(None),
                                        p.c.sockets_gone_at <= sa.bindparam("cutoff"),
                                        _no_live_socket)
        .values(presence="disconnected", presence_since=p.c.sockets_gone_at,
                sockets_gone_at=None).returning(*who, p.c.presence_since),
        # A final disconnect ends a wait in the lobby: coming back later is a new wait,
        # timed from then (a reload or a blip within the grace keeps the place).
        left_lobby=sa.update(_lobby).where(_lobby.c.participant_id == sa.bindparam("pid"),
                                           _lobby.c.admitted_at.is_(None),
                                           _lobby.c.left_at.is_(None))
        .values(left_at=sa.bindparam("gone")),
        still_connected=sa.select(p.c.id).where(p.c.id.in_(ids), p.c.presence == "connected",
                                                p.c.sockets_gone_at.is_(None)),
        events=sa.insert(_events).returning(_events.c.id, _events.c.participant_id,
                                            sort_by_parameter_order=True),
        # Who has a socket on another process that is still alive.
        elsewhere=sa.select(_sockets.c.participant_id).distinct()
        .select_from(_sockets.join(_processes, _processes.c.process_id == _sockets.c.process_id))
        .where(_sockets.c.participant_id.in_(ids), _sockets.c.process_id != sa.bindparam("me"),
               _processes.c.heartbeat_at >= sa.bindparam("alive_since")),
    )


def _apply(batch: _Batch, now: datetime) -> FlushResult:
    run, sql = db.session.execute, _statements()
    if batch.opened:
        run(sql.open, batch.opened)
    if batch.closed:
        run(sql.close, {"sids": batch.closed})
    connected, back = _record_connected(batch.connected) if batch.connected else ([], [])
    if batch.gone:
        run(sql.gone, [{"pid": pid, "at": at} for pid, at in batch.gone.items()])
    if batch.lobby:
        run(sql.lobby, [{"participant_id": pid, "entered_at": at}
                        for pid, at in batch.lobby.items()])
    if batch.links_used:
        run(sql.link_used, [{"link_id": link, "at": at} for link, at in batch.links_used.items()])
    if batch.routes:
        run(sql.route, [{"pid": pid, "route": route} for pid, route in batch.routes.items()])
    disconnected, still = _record_disconnected(batch.finalize, now) if batch.finalize else ([], [])
    facts = connected + disconnected
    if facts:
        signals.presence_recorded.send(current_app._get_current_object(), facts=facts)
    # Of those already connected when their first socket here opened: the ones connected
    # through another process too (a query only when someone came back).
    return FlushResult(connected, disconnected, still, connected_elsewhere(back, now))


def connected_elsewhere(participant_ids: list[int], now: datetime) -> list[int]:
    """Those of ``participant_ids`` with a socket on another process whose heartbeat is
    within ``PROCESS_TIMEOUT_SECONDS`` (one query)."""
    if not participant_ids:
        return []
    from visits.presence import process_id

    timeout = float(current_app.config["PROCESS_TIMEOUT_SECONDS"])
    return list(db.session.execute(_statements().elsewhere, {
        "ids": participant_ids, "me": process_id(),
        "alive_since": now - timedelta(seconds=timeout)}).scalars())


def _record_connected(first_connect: dict[int, datetime]
                      ) -> tuple[list[signals.PresenceFact], list[int]]:
    """Who became connected (the conditional UPDATE decides, once across processes), and
    who was already (``back``); a returning participant's pending disconnect is void.
    ``presence_since`` is the batch's first connect (exact when alone, within the write
    delay otherwise); each event keeps its own time."""
    run, sql = db.session.execute, _statements()
    ids = list(first_connect)
    won = run(sql.connected, {"ids": ids, "since": min(first_connect.values())}).all()
    won_ids = {row.id for row in won}
    back = [pid for pid in ids if pid not in won_ids]
    if back:
        run(sql.back, {"ids": back})
    return _insert_events([(row, first_connect[row.id]) for row in won], "connected"), back


def _record_disconnected(candidates: set[int], now: datetime
                         ) -> tuple[list[signals.PresenceFact], list[int]]:
    run, sql = db.session.execute, _statements()
    grace = timedelta(seconds=float(current_app.config["PRESENCE_GRACE_SECONDS"]))
    rows = run(sql.disconnected, {"ids": list(candidates), "cutoff": now - grace}).all()
    if rows:
        run(sql.left_lobby, [{"pid": row.id, "gone": row.presence_since} for row in rows])
    done = {row.id for row in rows}
    still = []
    if len(done) < len(candidates):
        still = list(run(sql.still_connected,
                         {"ids": [pid for pid in candidates if pid not in done]}).scalars())
    return _insert_events([(row, row.presence_since) for row in rows], "disconnected"), still


def _insert_events(rows: list[tuple], kind: str) -> list[signals.PresenceFact]:
    """One ``presence_events`` row per (participant row, when); returns the facts."""
    if not rows:
        return []
    from visits.presence import process_id

    inserted = db.session.execute(_statements().events, [
        {"participant_id": who.id, "kind": kind, "at": at, "process_id": process_id()}
        for who, at in rows]).all()
    return [signals.PresenceFact(event_id, who.id, who.appointment_id, who.role, kind, at)
            for (event_id, _), (who, at) in zip(inserted, rows)]
