"""How a text leaves the server, swappable by ``VV_SMS_SENDER`` (as warehouse swaps
its e-mail senders): ``outbox`` keeps it here, ``twilio`` sends it through Twilio.

A sender only transmits; the sending service (``notifications.sending``) decides what
is due, renders it, records the outcome and retries. Senders never log the number or
the text.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
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
    unsubscribed recipient); ``code`` is the provider's error code when it gave one."""

    def __init__(self, reason: str, *, code: str | None = None, retryable: bool = True):
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.retryable = retryable


class Sender(Protocol):
    name: str

    def send(self, *, to: str, body: str, from_number: str | None,
             status_callback: str | None) -> Sent:
        """Hand one text (``to`` in E.164) to the carrier side; Sent or SendFailed."""


class OutboxSender:
    """Keeps texts in the database only: `flask sms outbox` and the admin list them.

    The default and the demo's: nothing leaves the server, so there is no delivery
    report to wait for and a stored text counts as delivered."""

    name = "outbox"

    def send(self, *, to: str, body: str, from_number: str | None,
             status_callback: str | None) -> Sent:
        return Sent(f"outbox-{secrets.token_hex(8)}", status="delivered")


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
