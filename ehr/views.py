"""Public EHR-facing routes: our JWKS for client assertions, and HL7 v2 intake."""
from __future__ import annotations

import logging

from flask import Response, jsonify, request

from ehr import bp, hl7, keys
from ehr import hl7_intake as hl7_intake_service

log = logging.getLogger(__name__)

# EHRs cache our JWKS; five minutes keeps a freshly rotated key visible quickly while
# sparing us a fetch per token request. Retired keys stay listed far longer than that.
_JWKS_MAX_AGE_SECONDS = 300


@bp.get("/.well-known/jwks.json")
def jwks():
    """Our public signing keys (active and recently retired) for private_key_jwt."""
    response = jsonify(keys.public_jwks())
    response.headers["Cache-Control"] = f"public, max-age={_JWKS_MAX_AGE_SECONDS}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response


# HL7 bodies are a few kilobytes; anything over this is a mistake or an attack.
HL7_MAX_BYTES = 1024 * 1024


@bp.post("/hl7/v2/<endpoint>")
def hl7_intake(endpoint: str):
    """Signed HL7 v2 SIU from an EHR: an ACK with HTTP 200 whatever its MSA-1; 401 for a
    missing or bad signature, 400 when not even MSH can be read, 413 over 1 MiB."""
    if request.content_length is not None and request.content_length > HL7_MAX_BYTES:
        return _plain("body over 1 MiB", 413)
    body = request.stream.read(HL7_MAX_BYTES + 1)
    if len(body) > HL7_MAX_BYTES:
        return _plain("body over 1 MiB", 413)
    try:
        result = hl7_intake_service.receive(endpoint, body, request.headers.get("X-Signature"))
    except hl7_intake_service.UnknownEndpoint:
        return _plain("unknown or unapproved endpoint", 404)
    except hl7_intake_service.SignatureInvalid:
        log.info("hl7 signature refused", extra={"endpoint": endpoint})
        return _plain("missing or invalid X-Signature", 401)
    except hl7.UnreadableMessage as exc:
        log.info("hl7 message unreadable", extra={"endpoint": endpoint, "reason": str(exc)})
        return _plain(str(exc), 400)
    # Ids and codes only: the body and the ACK may carry PHI.
    log.info("hl7 message acknowledged", extra={
        "endpoint": endpoint, "control_id": result.control_id,
        "message_type": result.message_type, "ack_code": result.code,
        "applied": result.applied})
    return Response(result.ack, status=200, mimetype="x-application/hl7-v2+er7")


def _plain(text: str, status: int) -> Response:
    return Response(text + "\n", status=status, mimetype="text/plain")
