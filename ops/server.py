"""The gevent server behind ``python app.py``: real WebSockets, no delayed-ACK stall."""
from __future__ import annotations

import logging
import signal
import socket

import gevent
import gevent.event
from flask import Flask
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

log = logging.getLogger(__name__)


class NoDelayHandler(WebSocketHandler):
    """gevent's WSGI server leaves Nagle on, so every keep-alive response waits ~40 ms for
    the peer's delayed ACK (measured in shared/PERFORMANCE.md). Turn it off per connection.

    Its read buffer is 2 KiB instead of 8: a connection that becomes a WebSocket keeps it
    for hours, and our frames and request headers are small (docs/performance.md)."""

    READ_BUFFER = 2048

    def __init__(self, sock, address, server, rfile=None):
        if rfile is None:
            rfile = sock.makefile("rb", self.READ_BUFFER)
        super().__init__(sock, address, server, rfile)

    def handle(self):
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket (a Unix socket behind nginx): nothing to tune
            pass
        return super().handle()

    # A response body up to this size goes out with its headers in one send (a copy of at
    # most this much is cheaper than a second system call, and a phone on a slow network
    # gets one packet fewer); a larger one is sent after them, as gevent does.
    COALESCE_BODY_BYTES = 256 * 1024

    def _write_with_headers(self, data):
        # gevent sends the status line and headers, then the body, in two calls to
        # sendall (a twentieth of a /join's CPU). Collect both, then send them as one.
        if not data or len(data) > self.COALESCE_BODY_BYTES:
            return super()._write_with_headers(data)
        parts: list = []
        self._sendall = parts.append  # what gevent's method writes through
        try:
            super()._write_with_headers(data)
        finally:
            del self._sendall
        self._sendall(b"".join(parts))

    def MessageClass(self, rfile, *_):
        return read_headers(rfile)

    def log_request(self):
        # Our own access log (ops/logs.py) records route patterns; this one would print
        # full paths, and join links carry a token in the path.
        pass


# http.client's limits, which gevent's own parser applies.
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100


def read_headers(rfile) -> pywsgi.OldMessage:
    """A request's header fields, read up to the blank line, as the message gevent's
    parser builds (``email``'s, behind ``http.client.parse_headers``) but in a fifth of its
    time: that parser was a twentieth of the CPU of a ``/join``. A bad field gives the
    message a ``status``, and gevent answers 400: a line without a colon, whitespace before
    the colon (RFC 9112 5.1 asks for a 400), too long a line, too many fields. A folded
    line (obsolete) continues the previous value after one space (RFC 9112 5.2)."""
    message = pywsgi.OldMessage()
    fields: list[tuple[str, str]] = []
    while True:
        line = rfile.readline(MAX_HEADER_LINE + 1)
        if len(line) > MAX_HEADER_LINE:
            message.status = "Line too long"
            return message
        if line in (b"\r\n", b"\n", b""):
            break
        text = line.decode("iso-8859-1")
        if text[0] in " \t":
            if not fields:
                message.status = "Invalid header"
                return message
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {text.strip()}")
            continue
        if len(fields) >= MAX_HEADERS:
            message.status = "Too many headers"
            return message
        name, colon, value = text.partition(":")
        if not colon or not name or name.rstrip(" \t") != name:
            message.status = "Invalid header"
            return message
        fields.append((name, value.strip(" \t\r\n")))
    message._headers = fields
    return message


def serve(app: Flask) -> None:
    """Listen on the configured host and port until interrupted."""
    host, port = app.config["HOST"], app.config["PORT"]
    server = pywsgi.WSGIServer((host, port), app, handler_class=NoDelayHandler, log=None,
                               error_log=logging.getLogger("virtual_visits.server"))
    from extensions import socketio
    from ops import background, transport

    transport.install(socketio)
    background.start(app)
    freeze_startup_heap()
    log.info("listening", extra={"url": f"http://{host}:{port}",
                                 "public_base_url": app.config["PUBLIC_BASE_URL"]})
    stopping = gevent.event.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, stopping.set)
    server.start()
    stopping.wait()
    log.info("stopping")
    server.close()  # no new connections; the open ones end with the process
    stop(app)


def freeze_startup_heap() -> None:
    """Keep the garbage collector's pauses short (ops/gc_pauses.py)."""
    from ops import gc_pauses

    gc_pauses.watch()


# How long a stopping process waits for its write-backs in flight (a deploy waits this
# long at most for a slow EHR; the rest are sent again after their lease).
STOP_WAIT_FOR_WRITEBACKS_SECONDS = 5.0


def stop(app: Flask) -> None:
    """Before the process ends: write what is queued and say this process has left, so
    whoever serves its patients next knows at once. Pages reconnect on their own."""
    from visits import presence, writer
    from visits.models import utcnow

    from ehr import outbox

    with app.app_context():
        # Write-backs in flight finish first (an EHR answers in well under a second); cut
        # off, each would be sent again by whoever claims it after its lease.
        outbox.finish_in_flight(STOP_WAIT_FOR_WRITEBACKS_SECONDS)
        try:
            writer.flush()
            held = presence.leave(utcnow())
            log.info("left", extra={"sockets": held})
        except Exception:  # the database may be what is failing; the sweep of the
            log.exception("could not record leaving")  # others covers it then
        finally:
            from extensions import db

            db.session.remove()
