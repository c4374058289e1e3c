"""A local stand-in for Twilio's Messages REST API, served over real HTTP.

It checks each request as Twilio does (path, HTTP Basic auth with the account SID and
auth token, form-encoded fields) and answers in Twilio's shapes: a 201 Message resource,
or an error object ``{"code", "message", "more_info", "status"}``. List Messages
(``GET .../Messages.json`` with ``To``, ``From``, ``DateSent``, ``DateSent<``, ``DateSent>``
and paging) answers a page of the messages it accepted, newest first. Tests read what it
accepted from ``messages``, make it refuse the next requests with ``fail_next``, make it
answer slowly (``delay``: the message is created at the end of it, whether or not the
client is still waiting), and make it report delivery the way Twilio does (a signed form
POST to the message's StatusCallback) with ``report_status``. ``wait_for`` waits for a
condition on the fake (requests arrived, messages created) with a deadline.

The fake sends what it accepts at once (``date_sent`` set, status "sent" when listed)
unless ``send_at_once`` is False: the messages then stay queued, with no DateSent.

The ``twilio_fake`` fixture starts one per test on a free loopback port.
"""
from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from email.utils import format_datetime, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from twilio.request_validator import RequestValidator

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f" * 8 + "0123456789abcdef" + "e" * 8
FROM_NUMBER = "+15005550006"

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json$")
# Twilio's wording for the errors the fake can give (see twilio.com/docs/api/errors).
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    21211: "The 'To' number {to} is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
           "'To' number: {to}.",
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21609: "Invalid StatusCallback url",
    21610: "Attempt to send to unsubscribed recipient",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
    21212: "The 'From' number {from_} is not a valid phone number, shortcode, or alphanumeric "
           "sender ID.",
}
# An error code's HTTP status at Twilio when it is not 400.
_ERROR_STATUS = {20003: 401, 20404: 404, 20429: 429}


@dataclass
class _Failure:
    status: int
    code: int | None


@dataclass
class TwilioFake:
    """The running fake: ``url`` is the base to give TwilioSender (VV_TWILIO_API_BASE_URL)."""

    url: str = ""
    account_sid: str = ACCOUNT_SID
    auth_token: str = AUTH_TOKEN
    # Accepted messages, oldest first: the Message resource as returned, plus
    # "status_callback" (the StatusCallback field, or None).
    messages: list[dict[str, Any]] = field(default_factory=list)
    # Seconds each Messages POST takes before the message is created and answered.
    delay: float = 0.0
    send_at_once: bool = True
    # Every request that reached the server, accepted or not: method, path, headers, form.
    requests: list[dict[str, Any]] = field(default_factory=list)
    _failures: list[_Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # hang_next() makes the next request wait for _release (set at teardown), so a
    # client with a short timeout gives up.
    _hang_next: bool = False
    _release: threading.Event = field(default_factory=threading.Event)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def fail_next(self, count: int = 1, *, status: int | None = None,
                  code: int | None = None) -> None:
        """Refuse the next ``count`` requests: with HTTP ``status`` (500, 429, ...) and/or
        the Twilio error ``code`` (21610, ...), in Twilio's error shape."""
        if status is None:
            status = _ERROR_STATUS.get(code, 400) if code else 500
        with self._lock:
            self._failures.extend(_Failure(status, code) for _ in range(count))

    def hang_next(self) -> None:
        """Hold the next request without answering until the fake stops."""
        self._hang_next = True

    def wait_for(self, condition: Callable[[TwilioFake], bool], timeout: float) -> bool:
        """Until ``condition(fake)`` holds (checked at each request and each message
        created), at most ``timeout`` seconds; returns whether it held."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, 0.5))
        return True

    def posts(self) -> list[dict[str, Any]]:
        """The Messages POSTs that reached the fake, accepted or not."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "POST"]

    def message(self, sid: str) -> dict[str, Any]:
        return next(m for m in self.messages if m["sid"] == sid)

    def callback_params(self, sid: str, status: str,
                        error_code: int | None = None) -> dict[str, str]:
        """The form Twilio posts to a StatusCallback for ``sid`` reaching ``status``."""
        message = self.message(sid)
        params = {"AccountSid": self.account_sid, "ApiVersion": "2010-04-01",
                  "From": message["from"], "To": message["to"], "MessageSid": sid,
                  "SmsSid": sid, "MessageStatus": status, "SmsStatus": status}
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        return params

    def report_status(self, sid: str, status: str, error_code: int | None = None,
                      *, auth_token: str | None = None) -> requests.Response:
        """POST a delivery report to the message's StatusCallback, signed like Twilio's
        (X-Twilio-Signature over that exact URL and the form), and return the answer."""
        url = self.message(sid)["status_callback"]
        assert url, "the message was sent without a StatusCallback"
        params = self.callback_params(sid, status, error_code)
        signature = RequestValidator(auth_token or self.auth_token).compute_signature(url, params)
        with requests.Session() as http:
            http.trust_env = False  # loopback: never through a proxy
            return http.post(url, data=params, headers={"X-Twilio-Signature": signature},
                             timeout=10)

    # The server side -----------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> tuple[int, dict[str, Any]]:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length).decode("utf-8") if length else ""
        content_type = (handler.headers.get("Content-Type") or "").split(";")[0].strip()
        form = {k: v[0] for k, v in parse_qs(raw, keep_blank_values=True).items()}
        query = {k: v[0] for k, v in parse_qs(urlsplit(handler.path).query,
                                              keep_blank_values=True).items()}
        with self._changed:
            with self._lock:
                self.requests.append({"method": handler.command, "path": handler.path,
                                      "headers": dict(handler.headers.items()), "form": form,
                                      "query": query, "content_type": content_type})
                failure = self._failures.pop(0) if self._failures else None
                hang, self._hang_next = self._hang_next, False
            self._changed.notify_all()
        if hang:
            self._release.wait(30)
            return 500, _error(500, None)

        match = _MESSAGES_PATH.match(urlsplit(handler.path).path)
        if handler.command not in ("POST", "GET") or not match:
            return 404, _error(404, 20404)
        if not self._authorised(handler.headers.get("Authorization"), match.group(1)):
            return 401, _error(401, 20003, detail="Your AccountSid or AuthToken was incorrect.")
        if failure is not None:
            return failure.status, _error(failure.status, failure.code, form)
        if handler.command == "GET":
            return self._list(urlsplit(handler.path).path, query)
        if content_type != "application/x-www-form-urlencoded":
            return 400, _error(400, 21604)  # Twilio sees no fields at all
        problem = _invalid(form)
        if problem:
            return 400, _error(400, problem, form)
        if self.delay:
            time.sleep(self.delay)
        return 201, self._accept(form)

    def _list(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """A page of List Messages, newest first, as Twilio answers it."""
        try:
            page = int(query.get("Page", "0"))
            size = min(1000, int(query.get("PageSize", "50")))
            date_filters = [(name, _date_filter(query[name]))
                            for name in ("DateSent", "DateSent<", "DateSent>") if name in query]
        except ValueError:
            return 400, _error(400, 20001)
        with self._lock:
            found = [m for m in self.messages
                     if query.get("To", m["to"]) == m["to"]
                     and query.get("From", m["from"]) == m["from"]
                     and all(_sent_matches(m["date_sent"], name, value)
                             for name, value in date_filters)]
        found.sort(key=lambda m: parsedate_to_datetime(m["date_sent"] or m["date_created"]),
                   reverse=True)
        chunk = found[page * size:(page + 1) * size]

        def uri(number: int) -> str:
            return f"{path}?{urlencode({**query, 'Page': number, 'PageSize': size})}"

        return 200, {
            "messages": [{k: v for k, v in m.items() if k != "status_callback"} for m in chunk],
            "start": page * size, "end": page * size + max(len(chunk) - 1, 0),
            "page": page, "page_size": size, "uri": uri(page), "first_page_uri": uri(0),
            "previous_page_uri": uri(page - 1) if page else None,
            "next_page_uri": uri(page + 1) if len(found) > (page + 1) * size else None,
        }

    def _authorised(self, header: str | None, path_sid: str) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:]).decode("utf-8").partition(":")
        except ValueError:
            return False
        return (secrets.compare_digest(user, self.account_sid)
                and secrets.compare_digest(password, self.auth_token)
                and path_sid == self.account_sid)

    def _accept(self, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.now(timezone.utc).replace(microsecond=0))
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        resource = {
            "account_sid": self.account_sid, "api_version": "2010-04-01",
            "body": form["Body"], "date_created": now, "date_sent": None,
            "date_updated": now, "direction": "outbound-api", "error_code": None,
            "error_message": None, "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_media": "0", "num_segments": str(max(1, -(-len(form["Body"]) // 153))),
            "price": None, "price_unit": "USD", "sid": sid, "status": "queued",
            "subresource_uris": {"media": f"{base}/Media.json"}, "to": form["To"],
            "uri": f"{base}.json",
        }
        stored = {**resource, "status_callback": form.get("StatusCallback")}
        if self.send_at_once:
            stored.update(status="sent", date_sent=now)
        with self._changed:
            with self._lock:
                self.messages.append(stored)
            self._changed.notify_all()
        return resource


def _date_filter(value: str) -> date | datetime:
    """A DateSent filter's value: a day (``YYYY-MM-DD``) or a moment (ISO 8601, UTC)."""
    if len(value) == 10:
        return date.fromisoformat(value)
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _sent_matches(date_sent: str | None, name: str, value: date | datetime) -> bool:
    """Twilio's DateSent filters: on (``DateSent``), on or before (``<``), on or after
    (``>``) a day or moment. A message not sent yet has no DateSent and never matches."""
    if date_sent is None:
        return False
    sent = parsedate_to_datetime(date_sent)
    left: date | datetime = sent if isinstance(value, datetime) else sent.date()
    if name == "DateSent<":
        return left <= value
    if name == "DateSent>":
        return left >= value
    return left == value


def _invalid(form: dict[str, str]) -> int | None:
    """The Twilio error code for an unacceptable Messages form, or None."""
    if not form.get("To"):
        return 21604
    if not _E164.match(form["To"]):
        return 21211
    if not form.get("From") and not form.get("MessagingServiceSid"):
        return 21603
    if form.get("From") and not _E164.match(form["From"]):
        return 21212
    body = form.get("Body", "")
    if not body.strip():
        return 21602
    if len(body) > 1600:
        return 21617
    callback = form.get("StatusCallback")
    if callback is not None:
        parts = urlsplit(callback)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return 21609
    return None


def _error(status: int, code: int | None, form: dict[str, str] | None = None,
           detail: str | None = None) -> dict[str, Any]:
    form = form or {}
    message = ERROR_MESSAGES.get(code or 0, "Internal Server Error" if status >= 500 else "Error")
    body: dict[str, Any] = {
        "code": code, "status": status,
        "message": message.format(to=form.get("To", ""), from_=form.get("From", "")),
        "more_info": f"https://www.twilio.com/docs/errors/{code}" if code else None,
    }
    if detail:
        body["detail"] = detail
    return body


@pytest.fixture
def twilio_fake() -> Iterator[TwilioFake]:
    """A TwilioFake on a free loopback port for one test."""
    fake = TwilioFake()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802  (http.server's naming)
            self._answer()

        def do_GET(self):  # noqa: N802
            self._answer()

        def _answer(self) -> None:
            status, payload = fake._handle(self)
            body = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except OSError:  # the client gave up or was killed; Twilio would not mind
                pass

        def log_message(self, *args):  # keep pytest output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              name="twilio-fake", daemon=True)
    thread.start()
    yield fake
    fake._release.set()
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
