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
    """Readiness. 503 only when the database is down: nothing works without it. Redis down
    is 200 and "degraded": every process shares the one Redis, so failing them all would
    take the whole service out of the load balancer, while each keeps serving joins,
    sign-in and the device test (rate limits counted per process, real-time events
    reaching only this process's sockets) until Redis is back."""
    failures = {"database": _database_error()}
    if current_app.config["REDIS_URL"]:
        failures["redis"] = _redis_error(current_app.config["REDIS_URL"])
    down = sorted(name for name, error in failures.items() if error)
    status = "unavailable" if "database" in down else "degraded" if down else "ok"
    body = {"status": status, "checks": {
        name: "down" if error else "ok" for name, error in failures.items()}}
    if down:
        body["down"] = down
        body["reasons"] = {name: f"{failures[name]}: {_EFFECTS[name]}" for name in down}
        log.warning("not ready" if status == "unavailable" else "degraded",
                    extra={"down": down})
    return jsonify(body), 503 if status == "unavailable" else 200


# What a failed check means for the people using the service, for /readyz's "reasons".
_EFFECTS = {
    "database": "nothing can be served",
    "redis": "rate limits are counted per process, and Socket.IO events (presence, lobby) "
             "reach only the sockets of the process that sent them, until Redis is back",
}


@bp.get("/metrics")
def metrics():
    """Prometheus text format."""
    return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)


def _database_error() -> str | None:
    """None when the database answers, else why not (the exception's class; details go to
    the log, since the probe's answer may be seen by more people than the log)."""
    try:
        with db.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # any driver error means "not ready"
        log.warning("database check failed", exc_info=True)
        return f"unreachable ({type(exc).__name__})"


def _redis_error(url: str) -> str | None:
    import redis

    from extensions import redis_client_options

    try:
        client = redis.Redis.from_url(url, **redis_client_options())
        try:
            client.ping()
            return None
        finally:
            client.close()
    except Exception as exc:  # connection refused, auth, timeout: all mean "down"
        log.warning("redis check failed", exc_info=True)
        return f"unreachable ({type(exc).__name__})"


@bp.route("/socket.io/", methods=["GET", "POST"])
@bp.route("/socket.io/", endpoint="socketio_websocket", websocket=True)
def socketio_transport():
    """Never reached: the Socket.IO middleware answers this path before Flask does.

    The rules are here because every Socket.IO event runs in a request context built from
    the socket's handshake (a WebSocket upgrade, or a polling request); without a matching
    rule, Flask raises (and keeps) a NotFound or a WebsocketMismatch per event, whose
    traceback is cyclic garbage the collector pauses on.
    """
    abort(404)
