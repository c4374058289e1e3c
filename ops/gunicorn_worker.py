"""gunicorn worker for production: gevent, real WebSockets, Nagle off (see ops/server.py)."""
from __future__ import annotations

from geventwebsocket.gunicorn.workers import GeventWebSocketWorker

from ops.server import NoDelayHandler


class Worker(GeventWebSocketWorker):
    wsgi_handler = NoDelayHandler
