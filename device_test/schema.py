"""The JSON a browser posts to ``/device-test/results``, as a JSON Schema.

Strict (no unknown keys, bounded numbers and strings) because the body comes from
anyone on the internet and ends up in a FHIR resource in the patient's chart.
"""
from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator

STATUSES = ["pass", "warn", "fail", "skipped"]
CHECKS = ["speaker", "microphone", "camera", "connection", "test_call"]
MAX_BODY_BYTES = 64 * 1024


def _number(maximum: float) -> dict[str, Any]:
    return {"type": ["number", "null"], "minimum": 0, "maximum": maximum}


_MESSAGE = {"type": "string", "maxLength": 300}
_TRANSPORT = {
    "type": "object", "additionalProperties": False, "required": ["kind", "status"],
    "properties": {
        "kind": {"enum": ["stun", "turn-udp", "turn-tcp", "turns"]},
        "status": {"enum": STATUSES},
        "error": {"type": ["string", "null"], "maxLength": 120},
        "ms": _number(60_000),
    },
}

# Measurements each check may carry, with their bounds (units in the names).
MEASUREMENTS: dict[str, dict[str, dict[str, Any]]] = {
    "speaker": {"heard": {"type": ["boolean", "null"]}},
    "microphone": {"peak_dbfs": {"type": ["number", "null"], "minimum": -200, "maximum": 0},
                   "clipping_pct": _number(100)},
    "camera": {"width": _number(10_000), "height": _number(10_000), "fps": _number(1000),
               "black_pct": _number(100), "frozen": {"type": ["boolean", "null"]}},
    "connection": {"rtt_ms": _number(60_000), "download_kbps": _number(10_000_000),
                   "upload_kbps": _number(10_000_000),
                   "transports": {"type": "array", "maxItems": 20, "items": _TRANSPORT}},
    "test_call": {"rtt_ms": _number(60_000), "jitter_ms": _number(60_000),
                  "packet_loss_pct": _number(100), "bitrate_in_kbps": _number(10_000_000),
                  "bitrate_out_kbps": _number(10_000_000), "mos": _number(5),
                  "video_limited": {"type": ["boolean", "null"]},
                  "relay": {"enum": STATUSES + [None]}},
}


def _check_schema(name: str) -> dict[str, Any]:
    return {
        "type": "object", "additionalProperties": False, "required": ["status"],
        "properties": {"status": {"enum": STATUSES}, "message": _MESSAGE,
                       **MEASUREMENTS[name]},
    }


RESULT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object", "additionalProperties": False, "required": ["checks"],
    "properties": {
        "version": {"const": 1},
        "context": {"type": ["string", "null"], "maxLength": 1000},
        "browser": {"type": "string", "maxLength": 120},
        "checks": {
            "type": "object", "additionalProperties": False, "required": CHECKS,
            "properties": {name: _check_schema(name) for name in CHECKS},
        },
    },
}
VALIDATOR = Draft202012Validator(RESULT_SCHEMA)


def first_error(document: Any) -> str | None:
    """A short description of the first schema violation, or None when valid."""
    error = next(iter(sorted(VALIDATOR.iter_errors(document), key=lambda e: list(e.path))), None)
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path) or "(body)"
    return f"{where}: {error.message}"[:300]
