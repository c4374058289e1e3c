"""What Twilio's webhooks do: delivery reports update a text's status, and replies of
STOP / START / HELP change whether a number is texted.

Services with explicit arguments (no request), so the views stay thin and tests can
call them directly. Each owns its commit. Nothing here logs a number or a text.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import phonenumbers
from flask_babel import force_locale
from flask_babel import gettext as _
from twilio.request_validator import RequestValidator

from ehr.models import EhrEndpoint
from extensions import db
from notifications import optout
from notifications.endpoint_settings import for_endpoint
from notifications.models import SmsMessage, SmsStatus

log = logging.getLogger(__name__)

# Twilio's MessageStatus -> ours. Twilio reports each step (queued, sent, delivered...)
# in a separate request, and they can arrive in any order.
TWILIO_STATUSES: dict[str, SmsStatus] = {
    "accepted": SmsStatus.SENT, "scheduled": SmsStatus.SENT, "queued": SmsStatus.SENT,
    "sending": SmsStatus.SENT, "sent": SmsStatus.SENT,
    "delivered": SmsStatus.DELIVERED, "read": SmsStatus.DELIVERED,
    "undelivered": SmsStatus.FAILED, "failed": SmsStatus.FAILED, "canceled": SmsStatus.FAILED,
}
# How far along a text is. A report only moves it forward, so a late "sent" cannot undo
# "delivered"; delivered and failed are final. Cancelled and suppressed texts were never
# handed to Twilio by us and are left alone.
_PROGRESS: dict[str, int] = {SmsStatus.SCHEDULED: 0, SmsStatus.SENDING: 0, SmsStatus.SENT: 1,
                             SmsStatus.DELIVERED: 2, SmsStatus.FAILED: 2}
# Carrier-side delivery errors (twilio.com/docs/api/errors), in our words: Twilio's own
# ErrorMessage is not kept because it may quote the number.
DELIVERY_ERRORS: dict[str, str] = {
    "30001": "queue overflow at Twilio",
    "30002": "the Twilio account was suspended",
    "30003": "the phone is off or out of reach",
    "30004": "the recipient blocked texts from this number",
    "30005": "the number is unknown or no longer in service",
    "30006": "a landline or a carrier that cannot receive texts",
    "30007": "filtered by the carrier as unwanted",
    "30008": "an unknown error at the carrier",
    "30034": "the sending number is not registered for US texting (A2P 10DLC)",
    "21610": "the recipient replied STOP to this sending number",
}
# A reply word that tells us the person's language, for the answer we text back.
_WORD_LANGUAGES = {"PARAR": "es", "ALTO": "es", "CANCELAR": "es", "AYUDA": "es", "SI": "es",
                   "INICIAR": "es", "SAIR": "pt_BR", "AJUDA": "pt_BR", "SIM": "pt_BR"}


@dataclass(frozen=True)
class StatusOutcome:
    """What a delivery report did: "updated", "stale" (older than what we know),
    "unknown" (no text has that id) or "ignored" (a status we do not track)."""

    result: str
    status: str | None = None


@dataclass(frozen=True)
class InboundOutcome:
    """A reply's keyword (STOP, START, HELP or None) and the text to answer with."""

    keyword: str | None
    reply: str | None


def signature_valid(auth_token: str, public_url: str, params: Mapping[str, Any],
                    signature: str | None) -> bool:
    """Whether ``X-Twilio-Signature`` is Twilio's HMAC of the URL it called and the form.

    ``public_url`` must be the address Twilio was given (our public base URL and the
    path), not the one this process saw: behind a proxy they differ and nothing would
    ever validate."""
    if not signature or not auth_token:
        return False
    return RequestValidator(auth_token).validate(public_url, params, signature)


def record_status(message_sid: str, twilio_status: str, error_code: str | None,
                  now: datetime, ref: str | None = None) -> StatusOutcome:
    """Apply one delivery report to the text Twilio calls ``message_sid``.

    ``ref`` is our id for the hand-over, from the StatusCallback URL: a report that comes
    before the sender recorded the SID (Twilio can post "queued" within milliseconds), or
    after the sender died mid-send, finds its text by it while the text is ``sending``,
    and settles it (SID and status) so it is never sent again.

    One conditional UPDATE, so two reports handled at once by two processes cannot
    interleave into a step backwards."""
    new = TWILIO_STATUSES.get((twilio_status or "").strip().lower())
    if new is None:
        log.info("twilio status not tracked", extra={"provider_message_id": message_sid,
                                                      "twilio_status": twilio_status})
        return StatusOutcome("ignored")
    behind = [status for status, rank in _PROGRESS.items() if rank < _PROGRESS[new]]
    values: dict[str, Any] = {"status": new, "status_updated_at": now}
    if new == SmsStatus.FAILED:
        code = (error_code or "").strip()[:32] or None
        values["error_code"] = code
        values["error_message"] = _delivery_reason(twilio_status, code)
    updated = db.session.execute(
        db.update(SmsMessage)
        .where(SmsMessage.provider_message_id == message_sid, SmsMessage.status.in_(behind))
        .values(**values)
        .execution_options(synchronize_session=False)).rowcount
    if not updated and ref:
        updated = db.session.execute(
            db.update(SmsMessage)
            .where(SmsMessage.send_ref == ref, SmsMessage.status == SmsStatus.SENDING,
                   SmsMessage.provider_message_id.is_(None))
            .values(**values, provider_message_id=message_sid[:64],
                    sent_at=SmsMessage.send_started_at)
            .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if updated:
        log.info("sms status updated", extra={"provider_message_id": message_sid,
                                              "status": str(new)})
        return StatusOutcome("updated", str(new))
    current = db.session.execute(db.select(SmsMessage.status).filter_by(
        provider_message_id=message_sid)).scalars().first()
    if current is None:
        log.info("status report for an unknown text", extra={"provider_message_id": message_sid})
        return StatusOutcome("unknown")
    return StatusOutcome("stale", current)


def _delivery_reason(twilio_status: str, code: str | None) -> str:
    reason = DELIVERY_ERRORS.get(code or "")
    said = f"Twilio reported {twilio_status.strip().lower()}"
    if reason:
        return f"{said}: {reason} (error {code})"
    return f"{said} (error {code})" if code else said


def handle_inbound(from_number: str, body: str | None, to_number: str | None) -> InboundOutcome:
    """A text someone sent to one of our numbers: STOP opts the number out at once
    (every endpoint), START opts it back in, HELP says who we are; anything else gets
    no answer (this number does not take messages)."""
    word = optout.keyword(body)
    if word is None:
        return InboundOutcome(None, None)
    phone = _e164(from_number)
    language = _WORD_LANGUAGES.get((body or "").strip().strip(".!").upper(), "en")
    if word == "STOP":
        optout.opt_out(phone, endpoint_id=_endpoint_id(to_number))
        db.session.commit()
        log.info("sms opt-out recorded", extra={"keyword": word})
        with force_locale(language):
            reply = _("Virtual Visits: you will get no more texts from us. Reply START to get "
                      "them again.")
    elif word == "START":
        optout.opt_in(phone, endpoint_id=_endpoint_id(to_number))
        db.session.commit()
        log.info("sms opt-in recorded", extra={"keyword": word})
        with force_locale(language):
            reply = _("Virtual Visits: you will get texts about your video visits again. "
                      "Reply STOP to stop.")
    else:
        with force_locale(language):
            reply = _("Virtual Visits: texts with links to your video visits. For help, call "
                      "your clinic. Reply STOP to stop, START to resume. Msg & data rates may "
                      "apply.")
    return InboundOutcome(word, reply)


def _e164(number: str) -> str:
    """Twilio sends E.164 already; normalise anyway so the opt-out hash matches the one
    the sending service computes for the same number."""
    number = (number or "").strip()
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return number
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _endpoint_id(to_number: str | None) -> int | None:
    """The endpoint whose sending number was texted, to record where a STOP came in."""
    if not to_number:
        return None
    to_number = _e164(to_number)
    for endpoint in db.session.scalars(db.select(EhrEndpoint)):
        if for_endpoint(endpoint).sender_number == to_number:
            return endpoint.id
    return None
