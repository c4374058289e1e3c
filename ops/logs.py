"""Structured logs: one JSON object per line, each carrying the request id.

Never log patient data: no names, phone numbers, tokens or message bodies. The access
log records the matched route pattern (``/j/<token>``), never the concrete path.
"""
from __future__ import annotations

import logging
import re
import sys
import time
import uuid

from flask import Flask, g, has_request_context, request
from pythonjsonlogger.json import JsonFormatter

from ops import metrics

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
access_log = logging.getLogger("virtual_visits.access")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_request_context() else "-"
        return True


# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class _TextFormatter(logging.Formatter):
    """For people reading a terminal: the message, then the ``extra`` fields as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}
        if extras:
            line += " " + " ".join(f"{key}={value}" for key, value in extras.items())
        return line


def configure(app: Flask) -> None:
    """Route all logging through one handler in the configured format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    if app.config["LOG_FORMAT"] == "json":
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        ))
    else:
        handler.setFormatter(_TextFormatter(
            "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    # Each create_app() (tests build many) replaces the handler rather than stacking them.
    for old in [h for h in root.handlers if getattr(h, "_virtual_visits", False)]:
        root.removeHandler(old)
    handler._virtual_visits = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(app.config["LOG_LEVEL"])
    # werkzeug's own access log prints full paths, which may hold join tokens.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)

    app.before_request(_start_request)
    app.after_request(_finish_request)


def _start_request() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response):
    response.headers["X-Request-ID"] = g.get("request_id", "-")
    started = g.get("request_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
    route = request.url_rule.rule if request.url_rule else "(unmatched)"
    metrics.http_requests.labels(request.method, route, str(response.status_code)).inc()
    if started:
        metrics.http_duration.labels(route).observe(duration_ms / 1000)
    access_log.info("request", extra={
        "method": request.method, "route": route, "status": response.status_code,
        "duration_ms": duration_ms,
    })
    return response
