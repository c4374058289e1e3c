"""The HL7 v2 HTTP endpoint: signed SIU bodies in, an HL7 ACK out."""
from __future__ import annotations

import logging

from flask import Response, request

from hl7feed import bp, hl7, services

log = logging.getLogger(__name__)

# HL7 bodies are a few kilobytes; anything over this is a mistake or an attack.
HL7_MAX_BYTES = 1024 * 1024


@bp.post("/hl7/v2/<endpoint>")
def intake(endpoint: str):
    """Signed HL7 v2 SIU from an EHR: an ACK with HTTP 200 whatever its MSA-1; 401 for a
    missing or bad signature, 400 when not even MSH can be read, 413 over 1 MiB."""
    if request.content_length is not None and request.content_length > HL7_MAX_BYTES:
        return _plain("body over 1 MiB", 413)
    body = request.stream.read(HL7_MAX_BYTES + 1)
    if len(body) > HL7_MAX_BYTES:
        return _plain("body over 1 MiB", 413)
    try:
        result = services.receive(endpoint, body, request.headers.get("X-Signature"))
    except services.UnknownEndpoint:
        return _plain("unknown or unapproved endpoint", 404)
    except services.SignatureInvalid:
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
