"""Socket.IO transport tuned for thousands of connections in one gevent process.

Measured on this machine (docs/performance.md), python-socketio and python-engineio as
they come spend, per connection:

- a room scan on every disconnect: ``BaseManager.basic_disconnect`` walks every room
  of the server to find the client's (0.8 ms at 9,000 rooms; a restart makes thousands
  of disconnects at once). ``Manager`` and ``RedisManager`` here keep each client's rooms;
- two long-lived greenlets besides the one reading the WebSocket: a writer blocked on an
  empty queue, and a ping task sleeping 25 s, about 9 KiB each. ``LeanSocket`` writes
  from a greenlet started only while something is queued, and one ``_PingClock``
  greenlet sends every socket's pings and checks their timeouts, which also replaces
  engine.io's service task (a timer per socket per ping interval);
- an 8 KiB read buffer per connection (``SmallBufferHandler`` in ops/server.py).

What the client sees is unchanged: the same packets, the same ping interval and timeout.
``install()`` is called where the server is served under gevent (ops/server.py, the
gunicorn worker); tests in threading mode run the libraries as they come.
"""
from __future__ import annotations

import collections
import logging
import time

import gevent

import engineio.server
import engineio.socket
import socketio
from engineio import exceptions, packet
from geventwebsocket.websocket import Header, WebSocket

log = logging.getLogger(__name__)


# --- Socket.IO client managers: rooms by client -----------------------------------------

class _RoomIndex:
    """Keeps ``(namespace, sid) -> rooms`` next to python-socketio's ``room -> sids``, so a
    disconnect leaves exactly its own rooms instead of scanning them all."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._rooms_of: dict[tuple[str, str], set] = {}

    def basic_enter_room(self, sid, namespace, room, eio_sid=None):
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self._rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid, namespace, room):
        super().basic_leave_room(sid, namespace, room)
        rooms = self._rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms_of[(namespace, sid)]

    def basic_disconnect(self, sid, namespace, **kwargs):
        if namespace not in self.rooms:
            return
        for room in list(self._rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            waiting = pending.get(namespace)
            if waiting is not None and sid in waiting:
                waiting.remove(sid)
                if not waiting:
                    del pending[namespace]

    def get_rooms(self, sid, namespace):
        return [room for room in self._rooms_of.get((namespace, sid), ()) if room is not None]


class Manager(_RoomIndex, socketio.Manager):
    """One process: python-socketio's in-memory manager with rooms indexed by client."""


class RedisManager(_RoomIndex, socketio.RedisManager):
    """Several processes sharing emits through Redis, rooms indexed by client."""


def client_manager(redis_url: str | None, channel: str):
    if not redis_url:
        return Manager()
    from extensions import redis_client_options

    # Fail fast while Redis is down, so an emit (which also publishes) is not held for
    # seconds of redis-py retries; the listener reconnects with its own backoff.
    return RedisManager(redis_url, channel=channel, redis_options=redis_client_options())


# --- Engine.IO sockets under gevent -----------------------------------------------------

class _PingClock:
    """Sends every socket's ping when due and closes those whose pong never came, from
    one greenlet. Due times are appended in order (one interval for all), so a deque
    kept in time order suffices."""

    def __init__(self, server) -> None:
        self.server = server
        self.pings: collections.deque = collections.deque()  # (due, socket)
        self.timeouts: collections.deque = collections.deque()  # (deadline, socket, ping time)
        self.task = None

    def schedule(self, sock) -> None:
        self.pings.append((time.monotonic() + self.server.ping_interval, sock))
        if self.task is None:
            self.task = self.server.start_background_task(self._run)

    # A tick every quarter second, yielding every few dozen pings: thousands of sockets
    # that connected together (after a restart) come due together, and sending all their
    # pings in one go would hold every other greenlet for tens of milliseconds.
    TICK_SECONDS = 0.25
    PINGS_PER_SLICE = 64

    def _run(self) -> None:
        while True:
            self.server.sleep(self.TICK_SECONDS)
            try:
                self._tick(time.monotonic())
            except Exception:  # the clock must outlive any one socket's trouble
                log.exception("ping clock failed")

    def _tick(self, now: float) -> None:
        pings, timeouts = self.pings, self.timeouts
        sent = 0
        while pings and pings[0][0] <= now:
            if sent and sent % self.PINGS_PER_SLICE == 0:
                self.server.sleep(0)
            _, sock = pings.popleft()
            if sock.closing or sock.closed or sock.last_ping is not None:
                continue
            sent += 1
            sock.last_ping = time.time()
            sock.send(packet.Packet(packet.PING))
            # A second late, so engine.io's own "more than ping_timeout" test holds.
            timeouts.append((now + self.server.ping_timeout + 1.0, sock, sock.last_ping))
        while timeouts and timeouts[0][0] <= now:
            _, sock, pinged = timeouts.popleft()
            if sock.last_ping == pinged and not (sock.closing or sock.closed):
                sock.check_ping_timeout()  # no pong since that ping: engine.io closes it
            if sock.closed:
                self.server.sockets.pop(sock.sid, None)


class LeanSocket(engineio.socket.Socket):
    """An Engine.IO socket without its two long-lived helper greenlets.

    Writing: what a handler emits is queued, and written right after the handler yields,
    from the event loop, in one non-blocking system call for everything queued by then
    (a connect's acknowledgement and first state go out together; on loopback a send
    costs the sender the receiver's TCP work too). Only a peer that reads slowly (its
    buffer full) gets a greenlet of its own, until it has caught up. No greenlet is made
    per message: each made reference cycles that kept the collector busy."""

    _ws = None
    _raw = None  # the connection's own non-blocking socket
    _writing = False

    def schedule_ping(self):
        # Like engine.io: a new ping only once the previous one was answered.
        if self.last_ping:
            self.last_ping = None
            _clock(self.server).schedule(self)

    def send(self, pkt):
        super().send(pkt)
        self._kick()

    def _kick(self) -> None:
        if self._ws is not None and not self._writing:
            self._writing = True
            _soon(self._flush)

    def close(self, wait=True, abort=False, reason=None):
        """engine.io's close, with a writer started for its end-of-stream marker (which
        it queues without ``send``) before waiting for the queue to empty."""
        if self.closed or self.closing:
            return
        self.closing = True
        self.server._trigger_event("disconnect", self.sid,
                                   reason or self.server.reason.SERVER_DISCONNECT,
                                   run_async=False)
        if not abort:
            self.send(packet.Packet(packet.CLOSE))
        self.closed = True
        self.queue.put(None)
        self._kick()
        # Wait for the queue only while something can still write it out: a WebSocket
        # whose reader has ended has no writer left, and joining would block for good.
        if wait and (self._ws is not None or not self.upgraded):
            self.queue.join()

    def _take(self) -> tuple[bytes, bool]:
        """Everything queued, as frames; and whether engine.io's end-of-stream came."""
        queue_empty = self.server.get_queue_empty_exception()
        frames = []
        while True:
            try:
                pkt = self.queue.get(block=False)
            except queue_empty:
                return b"".join(frames), False
            self.queue.task_done()
            if pkt is None:
                return b"".join(frames), True
            frames.append(_frame(pkt.encode()))

    def _flush(self) -> None:
        """From the event loop: never waits."""
        ws = self._ws
        if ws is None:
            self._writing = False
            return
        try:
            data, closing = self._take()
            sent = 0
            if data and self._raw is not None:
                try:
                    sent = self._raw.send(data)
                except BlockingIOError:
                    sent = 0
            if sent < len(data):  # a slow reader: wait for it in a greenlet of its own
                self.server.start_background_task(self._drain, data[sent:], closing)
                return
            if closing:
                ws.close()
        except Exception:  # the peer went away; the reader sees it too
            _close_quietly(ws)
        self._writing = False

    def _drain(self, rest: bytes, closing: bool) -> None:
        """Write to a peer that reads slowly, waiting as long as it takes, then whatever
        was queued meanwhile; then hand back to ``_flush``."""
        ws = self._ws
        try:
            while ws is not None:
                if rest:
                    _write(ws, rest)
                if closing:
                    ws.close()
                    break
                rest, closing = self._take()
                if not rest and not closing:
                    break
        except Exception:
            _close_quietly(ws)
        finally:
            self._writing = False

    def _websocket_handler(self, ws):
        """engine.io's handler (python-engineio 4.x), writing through ``_drain``."""
        def websocket_wait():
            data = ws.wait()
            if data and len(data) > self.server.max_http_buffer_size:
                raise ValueError("packet is too large")
            return data

        for attr in ["_sock", "socket"]:
            if hasattr(ws, attr) and hasattr(getattr(ws, attr), "settimeout"):
                getattr(ws, attr).settimeout(self.server.ping_interval + self.server.ping_timeout)

        if self.connected:
            # An upgrade from long-polling: the probe exchange first.
            self.upgrading = True
            decoded = packet.Packet(encoded_packet=websocket_wait())
            if decoded.packet_type != packet.PING or decoded.data != "probe":
                self.upgrading = False
                return []
            ws.send(packet.Packet(packet.PONG, data="probe").encode())
            self.queue.put(packet.Packet(packet.NOOP))  # ends the pending poll
            decoded = packet.Packet(encoded_packet=websocket_wait())
            if decoded.packet_type != packet.UPGRADE:
                self.upgraded = False
                self.upgrading = False
                return []
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        self._ws = ws
        self._raw = _raw_socket(ws)
        _trim_environ(ws._sock.environ)  # the server's own; Socket.IO keeps a copy
        if not self.queue.empty():
            self._kick()
        while True:
            try:
                data = websocket_wait()
            except Exception:
                break
            if data is None:  # closed by the client
                break
            try:
                self.receive(packet.Packet(encoded_packet=data))
            except exceptions.UnknownPacketError:
                pass
            except exceptions.SocketIsClosedError:
                break
            except Exception:
                self.server.logger.exception("Unknown receive error")
                break
        self._ws = None
        self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
        try:
            ws.close()
        except Exception:
            pass
        return []


# Request headers the connection keeps no use for once it is a WebSocket; the server's
# environ lives as long as the connection (Socket.IO's own copy is trimmed on connect).
_UPGRADE_ONLY = ("HTTP_COOKIE", "HTTP_USER_AGENT", "HTTP_ACCEPT", "HTTP_ACCEPT_ENCODING",
                 "HTTP_ACCEPT_LANGUAGE", "HTTP_SEC_WEBSOCKET_KEY", "HTTP_SEC_WEBSOCKET_EXTENSIONS",
                 "HTTP_CACHE_CONTROL", "HTTP_PRAGMA", "HTTP_ORIGIN", "HTTP_REFERER")


def _trim_environ(environ: dict) -> None:
    for key in _UPGRADE_ONLY:
        environ.pop(key, None)


def _frame(message: str | bytes) -> bytes:
    """One final WebSocket frame (RFC 6455: server frames are not masked)."""
    if isinstance(message, str):
        payload, opcode = message.encode("utf-8"), WebSocket.OPCODE_TEXT
    else:
        payload, opcode = bytes(message), WebSocket.OPCODE_BINARY
    return Header.encode_header(True, opcode, b"", len(payload), 0) + payload


def _write(ws, data: bytes) -> None:
    """Several frames in one write, on gevent-websocket's connection."""
    sock = ws._sock  # engine.io's wrapper holds the gevent-websocket WebSocket
    if sock.closed:
        raise ConnectionError("websocket closed")
    sock.raw_write(data)


def _raw_socket(ws):
    """The connection's socket under gevent's wrapper: sends on it never wait (it is
    non-blocking), they send what fits. None if the libraries' shape is unexpected."""
    try:
        return ws._sock.stream.handler.socket._sock
    except AttributeError:
        return None


def _soon(func) -> None:
    """Run ``func`` from the event loop as soon as the running greenlet yields."""
    gevent.get_hub().loop.run_callback(func)


def _close_quietly(ws) -> None:
    try:
        ws.close()
    except Exception:
        pass


def _clock(server) -> _PingClock:
    clock = getattr(server, "_vv_ping_clock", None)
    if clock is None:
        clock = server._vv_ping_clock = _PingClock(server)
    return clock


class _NoCloseHooks:
    """What gevent-websocket calls when a socket closes or fails to read: nothing to do."""

    def on_close(self, *_args) -> None:
        pass


_NO_CLOSE_HOOKS = _NoCloseHooks()


def install(sio) -> None:
    """Use the lean sockets for this Socket.IO server's engine (gevent only)."""
    eio = sio.server.eio if hasattr(sio, "server") else sio.eio
    if eio.async_mode != "gevent":
        return
    engineio.server.socket.Socket = LeanSocket
    # gevent-websocket builds a new class for every close and read error when the served
    # app has no `current_app` hook; under a drop or a storm that is a heap of cyclic
    # garbage for the collector to pause on.
    WebSocket.current_app = _NO_CLOSE_HOOKS
    # The ping clock checks timeouts; engine.io's service task would do it again, with a
    # timer per socket.
    eio.start_service_task = False
