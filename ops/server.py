"""The gevent server behind ``python app.py``: real WebSockets, no delayed-ACK stall."""
from __future__ import annotations

import gc
import logging
import socket

from flask import Flask
from gevent import pywsgi
from geventwebsocket.handler import WebSocketHandler

log = logging.getLogger(__name__)


class NoDelayHandler(WebSocketHandler):
    """gevent's WSGI server leaves Nagle on, so every keep-alive response waits ~40 ms for
    the peer's delayed ACK (measured in shared/PERFORMANCE.md). Turn it off per connection."""

    def handle(self):
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket (a Unix socket behind nginx): nothing to tune
            pass
        return super().handle()

    def log_request(self):
        # Our own access log (ops/logs.py) records route patterns; this one would print
        # full paths, and join links carry a token in the path.
        pass


def serve(app: Flask) -> None:
    """Listen on the configured host and port until interrupted."""
    host, port = app.config["HOST"], app.config["PORT"]
    server = pywsgi.WSGIServer((host, port), app, handler_class=NoDelayHandler, log=None,
                               error_log=logging.getLogger("virtual_visits.server"))
    from ops import background

    background.start(app)
    # Socket.IO messages create reference cycles, and full collections over the start-up
    # heap paused the server 140-240 ms (shared/PERFORMANCE.md). Move that heap out of the
    # collector's reach and collect the young generation less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 50)
    log.info("listening", extra={"url": f"http://{host}:{port}",
                                 "public_base_url": app.config["PUBLIC_BASE_URL"]})
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
