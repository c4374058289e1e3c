"""A FHIR server stand-in for the benchmark: answers write-backs after a fixed delay.

Serves just what the write-back outbox talks to: SMART discovery, a client_credentials
token endpoint, and ``POST /AuditEvent`` / ``POST /Observation``, each answered after
``--delay-ms`` (an EHR is not instant) with 201 and a Location, or 200 when
``If-None-Exist`` names an identifier already created (the retry of a write-back that
did arrive). ``GET /stats`` counts what arrived, by action, and the duplicates.
``--limit-per-s`` answers 429 with Retry-After above that rate, like a throttling EHR.

    python bench/fhir_standin.py --port 5190 --delay-ms 50
"""
from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import socket  # noqa: E402

import gevent  # noqa: E402
from gevent.pywsgi import WSGIHandler, WSGIServer  # noqa: E402

EVENT_SYSTEM = "urn:virtual-visits:event"


class Standin:
    def __init__(self, base: str, delay_s: float, limit_per_s: float | None) -> None:
        self.base = base
        self.delay_s = delay_s
        self.limit_per_s = limit_per_s
        self.created = 0
        self.duplicates = 0
        self.throttled = 0
        self.by_action: Counter[str] = Counter()
        self.events: list[tuple[str, float]] = []  # (action, when it happened), for ?since=
        self.identifiers: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.first_at: float | None = None
        self.last_at: float | None = None
        self._window: list[float] = []

    def __call__(self, environ, start_response):
        path, method = environ["PATH_INFO"], environ["REQUEST_METHOD"]
        if path.endswith("/.well-known/smart-configuration"):
            return self._json(start_response, 200, {
                "token_endpoint": f"{self.base}/token",
                "grant_types_supported": ["client_credentials", "authorization_code"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "capabilities": ["client-confidential-asymmetric"]})
        if path.endswith("/token") and method == "POST":
            environ["wsgi.input"].read()
            return self._json(start_response, 200, {
                "access_token": "bench-token", "token_type": "Bearer", "expires_in": 3600,
                "scope": "system/AuditEvent.c system/AuditEvent.rs system/Observation.c"})
        if path == "/stats":
            since = environ.get("QUERY_STRING", "").partition("since=")[2]
            return self._json(start_response, 200, self.stats(float(since) if since else None))
        if method == "POST" and path.rsplit("/", 1)[-1] in ("AuditEvent", "Observation"):
            return self._create(environ, start_response, path.rsplit("/", 1)[-1])
        return self._json(start_response, 404, {"resourceType": "OperationOutcome"})

    def _create(self, environ, start_response, resource_type: str):
        body = environ["wsgi.input"].read()
        if self.limit_per_s and self._over_limit():
            self.throttled += 1
            return self._json(start_response, 429, {"resourceType": "OperationOutcome"},
                              [("Retry-After", "1")])
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            gevent.sleep(self.delay_s)
        finally:
            self.in_flight -= 1
        resource = json.loads(body)
        identifier = environ.get("HTTP_IF_NONE_EXIST", "").rsplit("|", 1)[-1]
        if identifier and identifier in self.identifiers:
            self.duplicates += 1
            return self._json(start_response, 200, {"resourceType": resource_type, "id": "x"})
        self.identifiers.add(identifier)
        self.created += 1
        now = time.time()
        self.first_at = self.first_at or now
        self.last_at = now
        subtype = (resource.get("subtype") or [{}])[0].get("code", resource_type)
        self.by_action[subtype] += 1
        happened = (resource.get("period") or {}).get("start")
        if happened:
            self.events.append((subtype, _epoch(happened)))
        return self._json(start_response, 201, {"resourceType": resource_type, "id": str(self.created)},
                          [("Location", f"{self.base}/{resource_type}/{self.created}/_history/1")])

    def _over_limit(self) -> bool:
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 1.0]
        if len(self._window) >= self.limit_per_s:
            return True
        self._window.append(now)
        return False

    def stats(self, since: float | None = None) -> dict:
        """Counts; with ``since`` (epoch seconds), ``by_action`` counts only events that
        happened since then, whenever they were delivered."""
        by_action = self.by_action if since is None else \
            Counter(action for action, at in self.events if at >= since)
        return {"created": self.created, "duplicates": self.duplicates,
                "throttled": self.throttled, "max_in_flight": self.max_in_flight,
                "by_action": {"participant-connected": 0, "participant-disconnected": 0,
                              **by_action},
                "first_at": self.first_at, "last_at": self.last_at}

    @staticmethod
    def _json(start_response, status: int, body: dict, headers=()):
        data = json.dumps(body).encode()
        reason = {200: "OK", 201: "Created", 404: "Not Found", 429: "Too Many Requests"}[status]
        start_response(f"{status} {reason}", [("Content-Type", "application/fhir+json"),
                                              ("Content-Length", str(len(data))), *headers])
        return [data]


class NoDelayHandler(WSGIHandler):
    """Nagle off, as a real EHR's server would have it: otherwise every keep-alive reply
    waits ~40 ms for the delayed ACK (shared/PERFORMANCE.md)."""

    def handle(self):
        self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle()


def _epoch(instant: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    parser.add_argument("--limit-per-s", type=float, default=None)
    args = parser.parse_args()
    base = f"http://127.0.0.1:{args.port}/fhir"
    server = WSGIServer(("127.0.0.1", args.port), Standin(base, args.delay_ms / 1000,
                                                          args.limit_per_s), log=None,
                        handler_class=NoDelayHandler)
    print(f"fhir stand-in on {base}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
