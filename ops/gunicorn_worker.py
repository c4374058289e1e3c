"""gunicorn worker for production: gevent, real WebSockets, Nagle off (see ops/server.py)."""
from __future__ import annotations

from geventwebsocket.gunicorn.workers import GeventWebSocketWorker

from ops.server import NoDelayHandler, freeze_startup_heap, stop


class Worker(GeventWebSocketWorker):
    wsgi_handler = NoDelayHandler

    def load_wsgi(self):
        super().load_wsgi()
        # Each worker process runs its own background loops (outbox, presence upkeep);
        # they coordinate through the database.
        from extensions import socketio
        from ops import background, transport

        transport.install(socketio)
        background.start(self.wsgi)  # the Flask app that 'app:create_app()' returned
        freeze_startup_heap()

    def run(self):
        try:
            super().run()
        finally:
            stop(self.wsgi)  # write what is queued, say this worker has left
