"""The device test page, its throughput endpoints and the results API."""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone

from flask import Response, current_app, jsonify, render_template, request, url_for

from device_test import bp
from device_test import context as ctx
from device_test import services
from device_test.schema import MAX_BODY_BYTES
from extensions import limiter
from ops import headers
from patient_join.views import browser_help
from settings import grade_pair
from visits import realtime
from visits.calls import ice_servers

log = logging.getLogger(__name__)

# Throughput probes: big enough to time on a phone, small enough not to cost a data plan.
MAX_PROBE_BYTES = 4 * 1024 * 1024
_CHUNK = os.urandom(64 * 1024)  # incompressible, so a proxy cannot make the link look fast


def _now() -> datetime:
    return datetime.now(timezone.utc)


def page_config(config, participant_id: int, now: datetime) -> dict:
    """What the page's script needs: ICE servers (short-lived TURN credentials),
    thresholds and timings, all from settings."""
    return {
        "ice_servers": ice_servers(config, participant_id, now),
        "call_seconds": config["DEVICE_TEST_CALL_SECONDS"],
        "transport_timeout_seconds": config["DEVICE_TEST_TRANSPORT_TIMEOUT_SECONDS"],
        "thresholds": {
            "rtt_ms": grade_pair(config["DEVICE_TEST_RTT_MS"]),
            "jitter_ms": grade_pair(config["DEVICE_TEST_JITTER_MS"]),
            "packet_loss_pct": grade_pair(config["DEVICE_TEST_LOSS_PCT"]),
            "video_kbps": grade_pair(config["DEVICE_TEST_VIDEO_KBPS"]),
            "mos": grade_pair(config["DEVICE_TEST_MOS"]),
        },
    }


@bp.after_request
def _patient_headers(response):
    """A patient page: never framed (it asks for the camera and microphone), and its URL
    (``?ctx=``, a context token naming the appointment) never sent on as a Referer, also
    by the results and probe requests the page makes."""
    if request.endpoint != "device_test.static":
        headers.no_referrer(response)
        headers.forbid_framing(response)
    return response


@bp.get("/device-test")
def device_test():
    """The device test: speaker, microphone, camera, connection, then a test call."""
    token = request.args.get("ctx") or None
    context = None
    context_state = "none"
    if token:
        try:
            context = ctx.read_token(current_app.config["SECRET_KEY"], token,
                                     current_app.config["DEVICE_TEST_CONTEXT_TTL_SECONDS"])
            context_state = "valid"
        except ctx.ContextExpired:
            context_state = "expired"
        except ctx.ContextInvalid:
            context_state = "invalid"
    config = page_config(current_app.config, context.participant_id if context else 0, _now())
    help_texts = browser_help()
    back = request.args.get("next")
    if not (back and back.startswith("/") and not back.startswith("//")):
        back = None  # only our own pages: never an open redirect
    return render_template("device_test/device_test.html", config=config,
                           context_token=token if context else None,
                           context_state=context_state, back_url=back,
                           results_url=url_for("device_test.results"),
                           download_url=url_for("device_test.download"),
                           upload_url=url_for("device_test.upload"),
                           browser_help=help_texts,
                           browser_help_strings={f"help_{key}": text
                                                 for key, _name, text in help_texts})


# A result is an object of checks holding measurements and transports: four levels. Deeper
# documents are refused before the schema walks them (a validator recurses too).
MAX_DEPTH = 16


def _depth_over(document, limit: int) -> bool:
    """Whether containers nest more than ``limit`` deep (iterative: no recursion)."""
    stack = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _probe_limit() -> str:
    return current_app.config["DEVICE_TEST_RATE_LIMIT"]


@bp.get("/device-test/download")
@limiter.limit(_probe_limit)
def download():
    """``bytes`` random bytes (at most 4 MiB), never cached, for download throughput."""
    size = request.args.get("bytes", type=int)
    if size is None or not 0 < size <= MAX_PROBE_BYTES:
        return jsonify(ok=False, error=f"bytes must be between 1 and {MAX_PROBE_BYTES}"), 400

    def chunks():
        left = size
        while left > 0:
            piece = _CHUNK[:min(left, len(_CHUNK))]
            left -= len(piece)
            yield piece

    return Response(chunks(), mimetype="application/octet-stream",
                    headers={"Cache-Control": "no-store", "Content-Length": str(size)})


@bp.post("/device-test/upload")
@limiter.limit(_probe_limit)
def upload():
    """Reads and discards at most 4 MiB, for upload throughput; replies with the count."""
    if request.content_length is None or request.content_length > MAX_PROBE_BYTES:
        return jsonify(ok=False, error=f"send at most {MAX_PROBE_BYTES} bytes with a "
                                       "Content-Length"), 413
    received = 0
    while chunk := request.stream.read(64 * 1024):
        received += len(chunk)
    return jsonify(ok=True, bytes=received), 200, {"Cache-Control": "no-store"}


@bp.post("/device-test/results")
@limiter.limit(_probe_limit)
def results():
    """Store a finished device test (JSON); with a valid context, queue the Observation."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return jsonify(ok=False, error=f"body larger than {MAX_BODY_BYTES} bytes"), 400
    raw = request.stream.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return jsonify(ok=False, error=f"body larger than {MAX_BODY_BYTES} bytes"), 400
    if not request.is_json:
        return jsonify(ok=False, error="send application/json"), 400
    try:
        document = json.loads(raw)
    except ValueError:
        return jsonify(ok=False, error="body is not valid JSON"), 400
    except RecursionError:
        # Thousands of nested brackets fit in the size limit; the parser gives up on them.
        return jsonify(ok=False, error="body is nested too deeply"), 400
    if _depth_over(document, MAX_DEPTH):
        return jsonify(ok=False, error="body is nested too deeply"), 400
    try:
        recorded = services.record(
            document, secret_key=current_app.config["SECRET_KEY"],
            context_ttl_seconds=current_app.config["DEVICE_TEST_CONTEXT_TTL_SECONDS"],
            user_agent=request.headers.get("User-Agent"), now=_now())
    except services.ResultRejected as rejected:
        # Device measurements only (the schema allows nothing else), so safe to log.
        log.info("device test rejected", extra={"reason": str(rejected)[:200]})
        return jsonify(ok=False, error=str(rejected)), 400
    log.info("device test stored", extra={"result_id": recorded.result.id,
                                          "overall": recorded.result.overall,
                                          "written_back": recorded.written_back,
                                          "context_error": recorded.context_error})
    if recorded.result.appointment_id is not None:
        # The provider's visit page shows each participant's latest grade at once.
        realtime.push_visit(recorded.result.appointment_id, _now())
    return jsonify(ok=True, id=recorded.result.id, overall=recorded.result.overall,
                   written_back=recorded.written_back,
                   context_error=recorded.context_error), 201
