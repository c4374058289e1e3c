"""Probes and metrics for the operator, and the landing page."""
from __future__ import annotations

import logging
import os
import time

from flask import Response, abort, current_app, jsonify, render_template
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from extensions import db
from ops import bp

log = logging.getLogger(__name__)
_STARTED = time.time()


@bp.get("/")
def index():
    """What this server is, with the demo's entry points when the sandbox is on."""
    return render_template("ops/index.html", sandbox=current_app.config["SANDBOX"])


@bp.get("/healthz")
def healthz():
    """Liveness: the process answers. Touches nothing else, so it stays cheap."""
    return jsonify(status="ok", pid=os.getpid(), uptime_s=round(time.time() - _STARTED, 1))


@bp.get("/readyz")
def readyz():
    """Readiness: the database (and Redis when configured) answer; 503 names what is down."""
    checks = {"database": _database_ok()}
    if current_app.config["REDIS_URL"]:
        checks["redis"] = _redis_ok(current_app.config["REDIS_URL"])
    down = sorted(name for name, ok in checks.items() if not ok)
    body = {"status": "ok" if not down else "unavailable", "checks": {
        name: "ok" if ok else "down" for name, ok in checks.items()}}
    if down:
        body["down"] = down
        log.warning("not ready", extra={"down": down})
    return jsonify(body), 200 if not down else 503


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def _database_ok() -> bool:
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:  # any driver error means "not ready"; the reason goes to the log
        log.warning("database check failed", exc_info=True)
        return False


def _redis_ok(url: str) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # connection refused, auth, timeout: all mean "down"
        log.warning("redis check failed", exc_info=True)
        return False


@bp.route("/socket.io/", methods=["GET", "POST"])
def socketio_transport():
    """Never reached: the Socket.IO middleware answers this path before Flask does.

    The rule is here because every Socket.IO event runs in a request context built from
    the socket's handshake URL; without a matching rule, Flask raises (and keeps) a
    NotFound per event, whose traceback is cyclic garbage the collector pauses on.
    """
    abort(404)
