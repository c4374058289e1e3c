"""How a text leaves the server, swappable by ``VV_SMS_SENDER`` (as warehouse swaps
its e-mail senders): ``outbox`` keeps it here, ``twilio`` sends it through Twilio.

A sender only transmits, and after a crash says whether a text reached the carrier
(``find_sent``); the sending service (``notifications.sending``) decides what is due,
renders it, records the outcome, retries and settles texts left in doubt. Senders never
log the number or the text.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from flask import Flask, current_app


@dataclass(frozen=True)
class Sent:
    """Accepted for delivery. ``status`` is "sent" (delivery reported later by callback)
    or "delivered" (nothing further will be reported, e.g. the outbox)."""

    provider_message_id: str
    status: str = "sent"


class SendFailed(Exception):
    """Not accepted. ``retryable`` False for a refusal a retry cannot fix (bad number,
    unsubscribed recipient); ``code`` is the provider's error code when it gave one.
    ``in_doubt``: the carrier may have taken the text all the same (it did not answer in
    time), so it is looked up (``find_sent``) before it is sent again."""

    def __init__(self, reason: str, *, code: str | None = None, retryable: bool = True,
                 in_doubt: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retryable = retryable
        self.in_doubt = in_doubt


class Sender(Protocol):
    name: str

    def send(self, *, to: str, body: str, from_number: str | None,
             status_callback: str | None) -> Sent:
        """Hand one text (``to`` in E.164) to the carrier side; Sent or SendFailed."""

    def find_sent(self, *, to: str, body: str | None, from_number: str | None,
                  since: datetime) -> Sent | None:
        """The text with this body handed over for ``to`` from ``since`` on, if the
        carrier has it; None if it has not (it may then be sent again); SendFailed if the
        carrier cannot be asked now. A sender without this method cannot tell, and a text
        it was sending when its process died is not sent again."""


class OutboxSender:
    """Keeps texts in the database only: `flask sms outbox` and the admin list them.

    The default and the demo's: nothing leaves the server, so there is no delivery
    report to wait for and a stored text counts as delivered."""

    name = "outbox"

    def send(self, *, to: str, body: str, from_number: str | None,
             status_callback: str | None) -> Sent:
        return Sent(f"outbox-{secrets.token_hex(8)}", status="delivered")

    def find_sent(self, *, to: str, body: str | None, from_number: str | None,
                  since: datetime) -> Sent | None:
        """Never: the outbox's only record is the row itself, and a row still "sending"
        was never stored as delivered, so it is stored (sent) again. Nothing left the
        server, so no one can receive it twice (docs/sms.md)."""
        return None


@dataclass
class MemorySender:
    """For tests: remembers what it was asked to send, and fails on request."""

    name: str = "memory"
    sent: list[dict] = field(default_factory=list)
    # Each call pops one; a SendFailed here is raised instead of sending.
    failures: list[SendFailed] = field(default_factory=list)

    def send(self, *, to: str, body: str, from_number: str | None,
             status_callback: str | None) -> Sent:
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append({"to": to, "body": body, "from": from_number,
                          "status_callback": status_callback})
        return Sent(f"memory-{len(self.sent)}")

    def find_sent(self, *, to: str, body: str | None, from_number: str | None,
                  since: datetime) -> Sent | None:
        for number, text in enumerate(self.sent, start=1):
            if text["to"] == to and (body is None or text["body"] == body):
                return Sent(f"memory-{number}")
        return None


def get_sender(app: Flask | None = None) -> Sender:
    """The app's sender: ``app.extensions["sms_sender"]`` when a test put one there,
    otherwise the one ``VV_SMS_SENDER`` names (built once per app)."""
    app = app or current_app._get_current_object()
    sender = app.extensions.get("sms_sender")
    if sender is None:
        if app.config["SMS_SENDER"] == "twilio":
            from notifications.twilio_sender import TwilioSender

            sender = TwilioSender.from_config(app.config)
        else:
            sender = OutboxSender()
        app.extensions["sms_sender"] = sender
    return sender
