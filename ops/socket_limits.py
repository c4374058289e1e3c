"""A token bucket per socket, so one socket cannot take the server from everyone else.

Each connection may send ``SOCKET_EVENT_BURST`` events (its connect included) at once and
``SOCKET_EVENT_RATE`` per second after that. Beyond it, events are dropped before any
handler runs (no greenlet, no request context, no database), the socket hears
``rate_limited`` (at most once a second), and the reading greenlet steps aside after
each drop (until the event loop is idle) so a flood does not hold it. A socket with more
than ``SOCKET_EVENT_DROP_LIMIT`` dropped events within a minute is disconnected: told first
(Socket.IO ``disconnect``, so a browser does not reconnect on its own), then its
connection closed.

Events within the limit are also taken in turn: one socket has at most
``MAX_RUNNING_PER_SOCKET`` handlers running at once; the rest wait in that socket's own
queue, and the greenlet that drains it yields between events. Without that, a burst of
200 events started 200 greenlets at once, and every other socket's event waited behind
all of them (a ping took 100 ms, measured); now it waits behind a few.

What the pages send stays far below the defaults (20 a second, bursts of 200): a
quality sample every 10 s, a ping now and then, and at the start of a call one offer or
answer per peer plus their ICE candidates (a few dozen in a four-person call).

It wraps python-socketio's ``Server._handle_event``, ``_handle_event_internal`` and
``_handle_connect``, where every event (and every namespace connect, which a client may
repeat) passes after its packet is decoded and before its handler starts; ``install`` is
called once per Socket.IO server (per app) from ``create_app``.
"""
from __future__ import annotations

import collections
import logging
import math
import time

log = logging.getLogger(__name__)

# Dropped events are counted over windows of this length for SOCKET_EVENT_DROP_LIMIT.
DROP_WINDOW_SECONDS = 60.0
# A limited socket hears ``rate_limited`` at most this often.
TELL_INTERVAL_SECONDS = 1.0
# Handlers of one socket running at once (a slow one, waiting on the database, does not
# hold the others up); the socket's further events wait their turn.
MAX_RUNNING_PER_SOCKET = 4


class _Bucket:
    __slots__ = ("tokens", "at", "drops", "window_start", "told_at", "cut", "running",
                 "waiting")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.at = now
        self.drops = 0
        self.window_start = now
        self.told_at = -math.inf
        self.cut = False
        self.running = 0  # handlers of this socket started and not finished
        self.waiting: collections.deque = collections.deque()  # (namespace, id, data)


def install(server, *, rate: float, burst: int, drop_limit: int) -> None:
    """Limit every socket of ``server`` (a ``socketio.Server``); ``rate`` 0 turns it off."""
    if rate <= 0:
        return
    burst = max(1, int(burst))
    buckets: dict[str, _Bucket] = {}
    clock = time.monotonic
    manager = server.manager
    handle_event = server._handle_event
    handle_event_internal = server._handle_event_internal
    handle_connect = server._handle_connect
    handle_disconnect = server._handle_eio_disconnect
    step_aside = _step_aside(server)

    def take(eio_sid: str, namespace: str | None) -> _Bucket | None:
        """The socket's bucket when this packet may go on (a token taken), else None
        (the packet is dropped)."""
        now = clock()
        bucket = buckets.get(eio_sid)
        if bucket is None:
            bucket = buckets[eio_sid] = _Bucket(float(burst), now)
        else:
            tokens = bucket.tokens + (now - bucket.at) * rate
            bucket.tokens = tokens if tokens < burst else float(burst)
            bucket.at = now
        if bucket.tokens >= 1.0 and not bucket.cut:
            bucket.tokens -= 1.0
            return bucket
        _drop(server, bucket, eio_sid, namespace or "/", now, rate, drop_limit)
        step_aside()
        return None

    def limited_handle_event(eio_sid, namespace, id, data):
        bucket = take(eio_sid, namespace)
        if bucket is None:
            return None
        namespace = namespace or "/"
        if not server.async_handlers:  # the test client: handlers run inline anyway
            return handle_event(eio_sid, namespace, id, data)
        sid = manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is None or not manager.is_connected(sid, namespace):
            return handle_event(eio_sid, namespace, id, data)  # it refuses, as it does
        if bucket.running >= MAX_RUNNING_PER_SOCKET:
            bucket.waiting.append((namespace, id, data))
            return None
        bucket.running += 1  # handed back when its handler returns (below)
        return handle_event(eio_sid, namespace, id, data)

    def limited_handle_event_internal(srv, sid, eio_sid, data, namespace, id):
        try:
            return handle_event_internal(srv, sid, eio_sid, data, namespace, id)
        finally:
            if srv.async_handlers:
                _next_in_turn(eio_sid)

    def _next_in_turn(eio_sid: str) -> None:
        """Run the socket's waiting events from this greenlet, letting every other
        greenlet run before each one; then give the socket's running slot back."""
        while True:
            bucket = buckets.get(eio_sid)
            if bucket is None:  # disconnected: what waited is dropped with it
                return
            if not bucket.waiting:
                bucket.running -= 1
                return
            namespace, id, data = bucket.waiting.popleft()
            server.sleep(0)
            sid = manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is None or not manager.is_connected(sid, namespace):
                continue
            try:
                handle_event_internal(server, sid, eio_sid, data, namespace, id)
            except Exception as error:  # as a handler greenlet would end; no payload
                log.error("socket event failed", extra={"error": type(error).__name__})

    def limited_handle_connect(eio_sid, namespace, data):
        # A namespace CONNECT runs the connect handler (a database read, a join-guess
        # count), and a client may repeat it on one connection: it takes a token too.
        if take(eio_sid, namespace) is not None:
            return handle_connect(eio_sid, namespace, data)
        return None

    def forgetting_handle_eio_disconnect(eio_sid, *args, **kwargs):
        buckets.pop(eio_sid, None)
        return handle_disconnect(eio_sid, *args, **kwargs)

    server._handle_event = limited_handle_event
    server._handle_event_internal = limited_handle_event_internal
    server._handle_connect = limited_handle_connect
    server._handle_eio_disconnect = forgetting_handle_eio_disconnect
    # Engine.IO holds the bound method it was given at start; give it ours.
    server.eio.on("disconnect", forgetting_handle_eio_disconnect)
    server._vv_socket_buckets = buckets  # for tests and diagnostics


def _drop(server, bucket: _Bucket, eio_sid: str, namespace: str, now: float, rate: float,
          drop_limit: int) -> None:
    """Count the dropped event, tell the socket or cut it off, then let others run."""
    if not bucket.cut:
        if now - bucket.window_start > DROP_WINDOW_SECONDS:
            bucket.window_start, bucket.drops = now, 0
        bucket.drops += 1
        if drop_limit and bucket.drops > drop_limit:
            bucket.cut = True
            bucket.waiting.clear()
            log.warning("socket disconnected for flooding",
                        extra={"dropped": bucket.drops, "window_seconds": DROP_WINDOW_SECONDS})
            server.start_background_task(_cut_off, server, eio_sid, namespace)
        elif now - bucket.told_at >= TELL_INTERVAL_SECONDS:
            if bucket.told_at == -math.inf:
                log.info("socket rate limited")
            bucket.told_at = now
            sid = server.manager.sid_from_eio_sid(eio_sid, namespace)
            if sid is not None:
                retry_ms = math.ceil(max(0.0, 1.0 - bucket.tokens) / rate * 1000)
                server.emit("rate_limited", {"retry_after_ms": retry_ms}, to=sid,
                            namespace=namespace)


def _step_aside(server):
    """What the reading greenlet does after a drop. Under gevent it would otherwise go on
    decoding a flood already in its buffer without giving the event loop back; it waits
    for ``gevent.idle()``, until everything else ready (other sockets' reads, handlers,
    writes) has run, so a flooding socket only gets what time is left over (and, read
    that slowly, is held back by TCP). Measured: with ``sleep(0)`` instead, other
    sockets' pings took 10 ms at the median and 60 ms at p99 while 10,000 events were
    dropped; with ``idle()``, see docs/realtime.md."""
    if str(getattr(server, "async_mode", "")).startswith("gevent"):
        import gevent

        return gevent.idle
    return lambda: server.sleep(0)


def _cut_off(server, eio_sid: str, namespace: str) -> None:
    """Say so in Socket.IO (a browser then does not reconnect), then close the connection."""
    try:
        sid = server.manager.sid_from_eio_sid(eio_sid, namespace)
        if sid is not None:
            server.disconnect(sid, namespace=namespace)
        server.eio.disconnect(eio_sid)
    except Exception:  # it may have gone already; nothing else to undo
        log.info("flooding socket already gone")


class Budget:
    """A token bucket per key for one kind of event (chat messages per participant):
    ``burst`` at once, then ``rate`` a second. The socket-wide bucket above stops floods
    of anything; this stops a flood of one thing other people must read."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, float(burst), clock
        self._buckets: dict = {}  # key -> (tokens, at)

    def take(self, key) -> bool:
        """Whether one more event of ``key`` may go now (a token taken)."""
        now = self.clock()
        tokens, at = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def forget(self, key) -> None:
        self._buckets.pop(key, None)
