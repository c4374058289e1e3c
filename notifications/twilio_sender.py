"""Texts through Twilio's Programmable Messaging REST API, with the official SDK.

One narrow surface, like ``ehr/fhir.py``: ``send()`` returns ``Sent`` or raises
``SendFailed``, and every Twilio answer is mapped to "retry later" or "give up" here
and nowhere else. ``find_sent()`` asks Twilio's List Messages API whether a text left in
doubt (its process died mid-send, or Twilio did not answer in time) was created after
all. The number and the text are never logged, and Twilio's own error message is never
kept either: for an invalid number it quotes the number.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import requests
import urllib3
from twilio.base.exceptions import (TwilioException, TwilioRestException,
                                     TwilioServiceException)
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from notifications.senders import SendFailed, Sent
from settings import ENV_PREFIX, ConfigError

log = logging.getLogger(__name__)

TWILIO_API = "https://api.twilio.com"
# Seconds for connecting and for each read. The sending loop renews its claim while it
# waits; a text whose answer does not come in time is looked up before any resend.
DEFAULT_TIMEOUT = 10.0
# Looking up a text in doubt: Twilio's clock and ours may differ, and a text sent just
# after midnight was handed over just before it.
_LOOKUP_SLACK = timedelta(minutes=5)
# Twilio statuses meaning it has the text and the phone got it.
_DELIVERED = frozenset({"delivered", "read"})

# Refusals a retry cannot fix: the same request would be refused again. The words are
# ours (kept in SmsMessage.error_message); Twilio's own message may quote the number.
PERMANENT_ERRORS: dict[int, str] = {
    20003: "Twilio refused our credentials (check VV_TWILIO_ACCOUNT_SID and VV_TWILIO_AUTH_TOKEN)",
    20404: "Twilio does not know this account or sending number",
    21211: "the number is not a valid phone number",
    21408: "texting this country or region is not enabled in the Twilio account",
    21606: "the sending number cannot send texts",
    21608: "a Twilio trial account can only text verified numbers",
    21610: "the recipient replied STOP to this sending number",
    21612: "this sending number cannot reach the recipient's carrier",
    21614: "the number is not a mobile number",
    21617: "the text is longer than 1600 characters",
    21660: "the sending number does not belong to the Twilio account",
}
# Refusals that say "not now": back off and try again.
RETRYABLE_ERRORS: dict[int, str] = {
    20429: "Twilio is rate-limiting our requests",
    21611: "the sending number has too many texts queued at Twilio",
}


class TwilioNotConfigured(ConfigError):
    """``VV_SMS_SENDER=twilio`` without the credentials it needs."""


class _BaseUrlHttpClient(TwilioHttpClient):
    """The SDK's HTTP client with ``https://api.twilio.com`` replaced by another base.

    The SDK builds absolute URLs per domain; rewriting them in the client (the hook the
    SDK offers for proxies and custom transports) covers every resource at once."""

    def __init__(self, base_url: str, timeout: float) -> None:
        quiet = logging.getLogger("twilio.http_client")
        # It logs each request's URL, parameters and headers at INFO; a look-up's
        # parameters hold the patient's number (To). Our root logger runs at INFO.
        quiet.setLevel(logging.WARNING)
        # urllib3 logs each request line, query string included, at DEBUG.
        pool_log = logging.getLogger("urllib3.connectionpool")
        if pool_log.getEffectiveLevel() < logging.INFO:
            pool_log.setLevel(logging.INFO)
        super().__init__(timeout=timeout, logger=quiet)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any):
        if self.base_url != TWILIO_API and url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API):]
        return super().request(method, url, *args, **kwargs)


class TwilioSender:
    """Sends through one Twilio account; build it with ``from_config``."""

    name = "twilio"

    def __init__(self, *, account_sid: str, auth_token: str, from_number: str | None = None,
                 api_base_url: str = TWILIO_API, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.from_number = from_number
        # The SDK also honours TWILIO_EDGE / TWILIO_REGION from the environment (Twilio's
        # own variables for its regional hosts); they apply to api.twilio.com only.
        self.client = Client(account_sid, auth_token,
                             http_client=_BaseUrlHttpClient(api_base_url, timeout))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TwilioSender:
        """The sender the ``VV_TWILIO_*`` settings describe; TwilioNotConfigured if the
        account SID or auth token is missing."""
        missing = [f"{ENV_PREFIX}_{key}" for key in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
                   if not config.get(key)]
        if missing:
            raise TwilioNotConfigured(f"{ENV_PREFIX}_SMS_SENDER=twilio needs "
                                      f"{' and '.join(missing)}")
        return cls(account_sid=config["TWILIO_ACCOUNT_SID"],
                   auth_token=config["TWILIO_AUTH_TOKEN"],
                   from_number=config.get("TWILIO_FROM_NUMBER") or None,
                   api_base_url=config.get("TWILIO_API_BASE_URL") or TWILIO_API)

    def send(self, *, to: str, body: str, from_number: str | None,
             status_callback: str | None) -> Sent:
        """Create one Message at Twilio (``from_number`` or the installation's default);
        its delivery is reported later to ``status_callback``."""
        sender = from_number or self.from_number
        if not sender:
            raise SendFailed(f"no sending number: set {ENV_PREFIX}_TWILIO_FROM_NUMBER or the "
                             "endpoint's SMS sender number", code="config", retryable=False)
        try:
            message = self.client.messages.create(to=to, from_=sender, body=body,
                                                  status_callback=status_callback)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _refusal(exc.status, exc.code) from None
        except requests.RequestException as exc:
            raise _unreachable(exc, sending=True) from None
        except (TwilioException, ValueError) as exc:  # an answer we could not read
            # Twilio answered, so it may well have created the message.
            raise SendFailed(f"unreadable answer from Twilio ({type(exc).__name__})",
                             in_doubt=True) from None
        log.info("text accepted by Twilio", extra={"provider_message_id": message.sid})
        return Sent(message.sid, status="sent")

    def find_sent(self, *, to: str, body: str | None, from_number: str | None,
                  since: datetime) -> Sent | None:
        """The Message we created for ``to`` with this body from ``since`` on, if Twilio
        has one; None if not; SendFailed if Twilio cannot be asked now.

        List Messages (``GET .../Messages.json``) filtered by To and ``DateSent>=`` the day
        of ``since`` (Twilio's filter takes a date), then matched here: outbound, from our
        number, created from ``since`` on (give or take a few minutes of clock), and the
        same body unless Twilio redacts bodies. A text still queued at Twilio has no
        DateSent yet, so the newest texts to that number are read too when the first
        question finds nothing."""
        sender = from_number or self.from_number
        window = since - _LOOKUP_SLACK
        try:
            found = self._match(self.client.messages.list(
                to=to, date_sent_after=window.strftime("%Y-%m-%d"), limit=50),
                sender, body, window)
            if found is None:
                found = self._match(self.client.messages.list(to=to, limit=20),
                                    sender, body, window)
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _refusal(exc.status, exc.code) from None
        except requests.RequestException as exc:
            raise _unreachable(exc, sending=False) from None
        except TwilioException as exc:
            # A list page that is not 200 comes as TwilioException("Unable to fetch page",
            # response), not as the REST error a create raises.
            response = exc.args[1] if len(exc.args) > 1 else None
            if getattr(response, "status_code", None):
                raise _refusal(response.status_code, _error_code(response.text)) from None
            raise SendFailed(f"unreadable answer from Twilio ({type(exc).__name__})") from None
        except ValueError as exc:
            raise SendFailed(f"unreadable answer from Twilio ({type(exc).__name__})") from None
        if found is None:
            return None
        log.info("text in doubt found at Twilio", extra={"provider_message_id": found.sid})
        status = str(found.status or "").lower()
        return Sent(found.sid, status="delivered" if status in _DELIVERED else "sent")

    @staticmethod
    def _match(messages: Any, sender: str | None, body: str | None, window: datetime) -> Any:
        for message in messages:
            created = message.date_created or message.date_sent
            if not str(message.direction or "").startswith("outbound"):
                continue
            if sender and message.from_ and message.from_ != sender:
                continue
            if created is None or created < window:
                continue
            # Redacted bodies come back empty: then the number and the time must do.
            if body is not None and message.body and message.body != body:
                continue
            return message
        return None


def _refusal(status: Any, code: Any) -> SendFailed:
    """Twilio's HTTP status and error code → SendFailed, retryable or not."""
    status, code = _integer(status) or 0, _integer(code)
    # Without a Twilio code, the HTTP status (as the SDK itself falls back to).
    label = str(code or status or "") or None
    if code in RETRYABLE_ERRORS:
        return SendFailed(f"{RETRYABLE_ERRORS[code]} (error {code})", code=label)
    if code in PERMANENT_ERRORS:
        return SendFailed(f"{PERMANENT_ERRORS[code]} (error {code})", code=label, retryable=False)
    if status == 429 or status >= 500 or status in (408, 409):
        return SendFailed(f"Twilio is unavailable (HTTP {status}"
                          f"{f', error {code}' if code and code != status else ''})",
                          code=label)
    # Any other 4xx: the request itself was refused, and would be again.
    return SendFailed(f"Twilio refused the text (HTTP {status}"
                      f"{f', error {code}' if code and code != status else ''})",
                      code=label, retryable=False)


def _unreachable(exc: requests.RequestException, *, sending: bool) -> SendFailed:
    """A request that got no usable answer. Sending, a read that timed out or a
    connection lost after the request went out may have created the message: in doubt."""
    # The class name ("ConnectionError", "SSLError") says enough; the message repeats the
    # URL, which holds the number in a look-up.
    if isinstance(exc, requests.ConnectTimeout):
        return SendFailed("could not reach Twilio in time", code="timeout")
    if isinstance(exc, requests.Timeout):
        return SendFailed("Twilio did not answer in time", code="timeout", in_doubt=sending)
    cause = exc.args[0] if exc.args else None
    lost = isinstance(cause, urllib3.exceptions.ProtocolError)
    return SendFailed(f"could not reach Twilio ({type(exc).__name__})", code="network",
                      in_doubt=sending and lost)


def _error_code(body: str | None) -> int | None:
    """The ``code`` of a Twilio error object, if the body is one."""
    try:
        document = json.loads(body or "")
    except ValueError:
        return None
    return _integer(document.get("code")) if isinstance(document, dict) else None


def _integer(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
