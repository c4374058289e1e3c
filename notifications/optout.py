"""STOP / START per phone number, honoured at once.

The number is kept only as an HMAC (key derived from SECRET_KEY), so an opt-out can be
matched without keeping the number. Opt-outs apply to every endpoint: a patient who
said STOP to one clinic's texts gets no text from this installation.
"""
from __future__ import annotations

import hashlib
import hmac

from flask import current_app
from sqlalchemy.exc import IntegrityError

from extensions import db
from notifications.models import OptChange, SmsOptEvent, SmsOptOut

# Carrier conventions (CTIA): these words opt out, these opt back in, HELP asks who we are.
STOP_WORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT",
                        "PARAR", "ALTO", "SAIR", "CANCELAR"})
START_WORDS = frozenset({"START", "YES", "UNSTOP", "INICIAR", "SI", "SIM"})
HELP_WORDS = frozenset({"HELP", "INFO", "AYUDA", "AJUDA"})


def phone_hash(phone_e164: str) -> str:
    key = hmac.new(current_app.config["SECRET_KEY"].encode("utf-8"), b"sms-opt-out",
                   hashlib.sha256).digest()
    return hmac.new(key, phone_e164.encode("utf-8"), hashlib.sha256).hexdigest()


def is_opted_out(phone_e164: str) -> bool:
    return db.session.execute(db.select(SmsOptOut.id).filter_by(
        phone_hash=phone_hash(phone_e164))).first() is not None


def opt_out(phone_e164: str, endpoint_id: int | None = None) -> bool:
    """Record a STOP; True if it is new (then counted as an opt-out for the texts
    report). The caller commits."""
    if is_opted_out(phone_e164):
        return False
    try:
        with db.session.begin_nested():
            db.session.add(SmsOptOut(phone_hash=phone_hash(phone_e164), endpoint_id=endpoint_id))
            db.session.add(SmsOptEvent(change=OptChange.OPT_OUT, endpoint_id=endpoint_id))
    except IntegrityError:  # the same STOP arriving twice at once
        return False
    return True


def opt_in(phone_e164: str, endpoint_id: int | None = None) -> bool:
    """Forget a STOP (the person replied START); True if there was one (then counted as an
    opt-in). The caller commits."""
    deleted = db.session.execute(db.delete(SmsOptOut).filter_by(
        phone_hash=phone_hash(phone_e164))).rowcount
    if deleted:
        db.session.add(SmsOptEvent(change=OptChange.OPT_IN, endpoint_id=endpoint_id))
    return bool(deleted)


def keyword(body: str | None) -> str | None:
    """"STOP", "START" or "HELP" when the reply is one of their words, else None."""
    word = (body or "").strip().strip(".!").upper()
    if word in STOP_WORDS:
        return "STOP"
    if word in START_WORDS:
        return "START"
    if word in HELP_WORDS:
        return "HELP"
    return None
