"""Structured logs: one JSON object per line, each carrying the request id.

Never log patient data: no names, phone numbers, tokens or message bodies. The access
log records the matched route pattern (``/j/<token>``), never the concrete path.
"""
from __future__ import annotations

import json
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


class _JsonFormatter(JsonFormatter):
    """python-json-logger's lines, unchanged, for less work on the one every request writes:
    one encoder kept instead of one built per line, and the timestamp's date and seconds
    formatted once a second rather than once a line."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # What json.dumps builds from the arguments JsonFormatter passes it, built once.
        self._encoder = (self.json_encoder or json.JSONEncoder)(
            default=self.json_default, indent=self.json_indent,
            ensure_ascii=self.json_ensure_ascii)
        self._second: tuple[int, str] = (-1, "")

    def jsonify_log_record(self, log_data) -> str:
        return self._encoder.encode(log_data)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt or not self.default_msec_format:
            return super().formatTime(record, datefmt)
        second, text = self._second
        if second != int(record.created):
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second = (int(record.created), text)
        return self.default_msec_format % (text, record.msecs)


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
        handler.setFormatter(_JsonFormatter(
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
    # Neither format shows thread or process, and looking them up was an eighth of the
    # cost of each access log line (the logging HOWTO's "Optimization" section).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False

    app.before_request(_start_request)
    app.after_request(_finish_request)


def _start_request() -> None:
    incoming = request.environ.get("HTTP_X_REQUEST_ID", "")
    g.request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()


def _finish_request(response):
    context = g._get_current_object()
    response.headers["X-Request-ID"] = getattr(context, "request_id", "-")
    started = getattr(context, "request_started", None)
    duration_ms = round((time.perf_counter() - started) * 1000, 1) if started else None
    current = request._get_current_object()
    route = current.url_rule.rule if current.url_rule else "(unmatched)"
    method, status = current.method, response.status_code
    metrics.count_request(method, route, status, duration_ms / 1000 if started else None)
    access_log.info("request", extra={
        "method": method, "route": route, "status": status, "duration_ms": duration_ms,
    })
    return response
