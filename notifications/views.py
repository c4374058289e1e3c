"""Twilio's webhooks: delivery reports and replies to our numbers.

Both answer only requests signed with our Twilio auth token (``X-Twilio-Signature``),
and only when ``VV_SMS_SENDER=twilio``; the work is in ``notifications.webhooks``.
Paste these URLs into the Twilio console (docs/sms-twilio.md):

- ``<PUBLIC_BASE_URL>/sms/twilio/status``: sent with each text as its StatusCallback;
- ``<PUBLIC_BASE_URL>/sms/twilio/inbound``: the number's "A message comes in" webhook.
"""
from __future__ import annotations

import logging
import re

from flask import Response, abort, current_app, request
from twilio.twiml.messaging_response import MessagingResponse

from extensions import limiter
from notifications import bp, webhooks
from visits.models import utcnow

log = logging.getLogger(__name__)

STATUS_PATH = "/sms/twilio/status"
INBOUND_PATH = "/sms/twilio/inbound"
_REF = re.compile(r"[0-9a-f]{32}")


def _require_twilio_signature() -> None:
    """404 unless Twilio is our sender; 403 unless Twilio signed this very request."""
    config = current_app.config
    if config["SMS_SENDER"] != "twilio":
        abort(404)
    # Twilio signs the URL it was given, so rebuild it from the public base URL: behind
    # a proxy, request.url has the internal scheme, host and port.
    url = config["PUBLIC_BASE_URL"] + request.path
    if request.query_string:
        url += "?" + request.query_string.decode("latin-1")
    if not webhooks.signature_valid(config["TWILIO_AUTH_TOKEN"] or "", url, request.form,
                                    request.headers.get("X-Twilio-Signature")):
        log.warning("twilio webhook signature refused", extra={"route": request.path})
        abort(403)


# Twilio calls from a pool of addresses, a few requests per text; the limits only bound
# what an unsigned flood can cost us (the signature check comes first and is cheap).
@bp.post(STATUS_PATH)
@limiter.limit("3000 per minute")
def twilio_status():
    """Twilio reports a text's progress (queued, sent, delivered, undelivered, failed)."""
    _require_twilio_signature()
    sid = request.form.get("MessageSid") or request.form.get("SmsSid")
    status = request.form.get("MessageStatus") or request.form.get("SmsStatus")
    if not sid or not status:
        abort(400)
    # Our id for the hand-over, which we put in the StatusCallback URL ourselves.
    ref = request.args.get("ref")
    webhooks.record_status(sid, status, request.form.get("ErrorCode"), utcnow(),
                           ref=ref if ref and _REF.fullmatch(ref) else None)
    # 200 even for an unknown or stale report: Twilio has nothing better to send.
    return Response(status=200)


@bp.post(INBOUND_PATH)
@limiter.limit("300 per minute")
def twilio_inbound():
    """Someone texted one of our numbers; STOP, START and HELP are acted on and answered
    in TwiML, anything else gets an empty answer."""
    _require_twilio_signature()
    outcome = webhooks.handle_inbound(request.form.get("From", ""), request.form.get("Body"),
                                      request.form.get("To"))
    twiml = MessagingResponse()
    if outcome.reply:
        twiml.message(outcome.reply)
    return Response(str(twiml), mimetype="application/xml")
