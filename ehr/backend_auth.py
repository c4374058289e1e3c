"""SMART Backend Services tokens for write-backs: client_credentials with our private_key_jwt.

Write-backs (AuditEvents, device-test Observations) can be owed long after the
provider's launch token expired, or be retried after a restart, so they use a token of
their own: ``system/`` scopes, no user, no patient context. The token endpoint comes
from ``<fhir_base>/.well-known/smart-configuration``; tokens are kept in process memory
(never in the database, never logged) until shortly before they expire.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol
from urllib.parse import urlsplit

import requests

from ehr import keys
from ehr.errors import EhrError, EhrUnavailable, SmartError, TokenRefused, UntrustedUrl
from extensions import db
from settings import is_loopback
from visits.models import utcnow

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# What write-backs need: create AuditEvents and Observations, and search AuditEvents so
# an If-None-Exist condition can be evaluated by servers that check search rights too.
BACKEND_SCOPES = "system/AuditEvent.c system/AuditEvent.rs system/Observation.c"
_TIMEOUT_S = 10.0
# Renew this long before expiry, so a token never runs out between check and use.
_RENEW_MARGIN_S = 60.0
# Without expires_in we cannot know; five minutes is what SMART suggests as a floor.
_DEFAULT_LIFETIME_S = 300.0
# Failed token requests are kept this long for the integration health report.
TOKEN_FAILURE_RETENTION_DAYS = 90
_HTTP_STATUS = re.compile(r"HTTP (\d{3})")
_OAUTH_ERROR = re.compile(r"[a-z_]{1,60}")


@dataclass(frozen=True)
class BackendToken:
    access_token: str
    scope: str
    expires_at: float  # time.monotonic() deadline, renewal margin already taken off

    def __repr__(self) -> str:  # never print the token itself
        return f"<BackendToken scope={self.scope!r}>"


class Client(Protocol):
    """What a token request needs to know of an endpoint: an ``EhrEndpoint`` row, or the
    outbox's snapshot of one (its delivery workers run outside any database session)."""

    name: str
    fhir_base_url: str
    client_id: str


_cache: dict[tuple[str, str, str], BackendToken] = {}
_lock = threading.Lock()
# One token request per endpoint at a time: the outbox's concurrent deliveries all miss
# the cache together (start-up, a 401) and would otherwise each ask for a token.
_issuing: dict[tuple[str, str, str], threading.Lock] = {}


def _cache_key(endpoint: Client, scope: str) -> tuple[str, str, str]:
    return (endpoint.fhir_base_url.rstrip("/"), endpoint.client_id, scope)


def cached_token(endpoint: Client, *, scope: str = BACKEND_SCOPES) -> str | None:
    """The cached access token for ``endpoint``, or None when a request is needed (which
    ``access_token`` makes; it needs an app context, for our signing key)."""
    with _lock:
        cached = _cache.get(_cache_key(endpoint, scope))
    if cached and cached.expires_at > time.monotonic():
        return cached.access_token
    return None


def access_token(endpoint: Client, *, scope: str = BACKEND_SCOPES,
                 session: requests.Session | None = None) -> str:
    """A backend-services access token for ``endpoint``, from the cache or freshly issued.

    Raises EhrUnavailable (retry later), TokenRefused (OAuth error from the EHR) or
    SmartError (the EHR does not offer backend services as we need them).
    """
    token = cached_token(endpoint, scope=scope)
    if token is not None:
        return token
    key = _cache_key(endpoint, scope)
    with _lock:
        issuing = _issuing.setdefault(key, threading.Lock())
    with issuing:
        token = cached_token(endpoint, scope=scope)  # issued while we waited for the lock
        if token is not None:
            return token
        fresh = _request_token(endpoint, scope, session or requests.Session())
        with _lock:
            _cache[key] = fresh
        return fresh.access_token


def forget(endpoint: Client, *, scope: str = BACKEND_SCOPES, token: str | None = None) -> None:
    """Drop the cached token (the EHR answered 401: revoked, or the EHR restarted).

    With ``token``, only if that is still the cached one: of many deliveries refused
    together, the first gets a new token and the others must not throw it away again.
    """
    key = _cache_key(endpoint, scope)
    with _lock:
        cached = _cache.get(key)
        if cached is not None and (token is None or cached.access_token == token):
            del _cache[key]


def clear_cache() -> None:
    """Forget every cached token (tests, and after a key rotation if one wishes)."""
    with _lock:
        _cache.clear()


def token_endpoint(endpoint: Client, session: requests.Session | None = None) -> str:
    """The token URL from the endpoint's SMART configuration, checked before we post to it."""
    url = endpoint.fhir_base_url.rstrip("/") + "/.well-known/smart-configuration"
    try:
        response = (session or requests.Session()).get(
            url, timeout=_TIMEOUT_S, headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise EhrUnavailable(f"smart-configuration: {type(exc).__name__}") from None
    if response.status_code >= 500:
        raise EhrUnavailable(f"smart-configuration: HTTP {response.status_code}")
    if response.status_code != 200:
        raise SmartError(f"smart-configuration: HTTP {response.status_code}")
    try:
        config = response.json()
    except ValueError:
        raise EhrUnavailable("smart-configuration is not JSON") from None
    token_url = config.get("token_endpoint") if isinstance(config, dict) else None
    if not isinstance(token_url, str) or not token_url:
        raise SmartError("smart-configuration has no token_endpoint")
    grants = config.get("grant_types_supported")
    if isinstance(grants, list) and "client_credentials" not in grants:
        raise SmartError("the EHR does not offer client_credentials (SMART Backend Services)")
    _check_url(token_url)
    return token_url


def _check_url(url: str) -> None:
    """Only https (or plain http on loopback, for the sandbox and tests)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return
    raise UntrustedUrl(f"token endpoint must be https: {parts.scheme}://{parts.netloc}")


def _request_token(endpoint: Client, scope: str, session: requests.Session) -> BackendToken:
    url = token_endpoint(endpoint, session)
    form = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": keys.client_assertion(endpoint.client_id, url)}
    started = time.monotonic()
    try:
        response = session.post(url, data=form, timeout=_TIMEOUT_S,
                                headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise EhrUnavailable(f"token endpoint: {type(exc).__name__}") from None
    if response.status_code >= 500:
        raise EhrUnavailable(f"token endpoint: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise EhrUnavailable(f"token endpoint: HTTP {response.status_code}, not JSON") from None
    if response.status_code != 200:
        error = body.get("error") if isinstance(body, dict) else None
        raise TokenRefused(str(error or f"HTTP {response.status_code}"))
    token = body.get("access_token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token:
        raise EhrUnavailable("token endpoint: no access_token in the reply")
    lifetime = body.get("expires_in")
    if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool) or lifetime <= 0:
        lifetime = _DEFAULT_LIFETIME_S
    log.info("backend services token issued",
             extra={"endpoint": endpoint.name, "expires_in": lifetime})
    # Half the lifetime at most as margin, so very short tokens are still reused a little.
    margin = min(_RENEW_MARGIN_S, float(lifetime) / 2)
    return BackendToken(token, str(body.get("scope", scope)),
                        started + float(lifetime) - margin)


def failure_class(exc: EhrError) -> str:
    """What kind of failure ``exc`` is, short and free of anything the EHR sent but an
    HTTP status or an OAuth error code: "TokenRefused invalid_client",
    "EhrUnavailable HTTP 503", "SmartError"."""
    kind = type(exc).__name__
    text = str(exc)
    if isinstance(exc, TokenRefused) and _OAUTH_ERROR.fullmatch(exc.error or ""):
        return f"{kind} {exc.error}"
    status = _HTTP_STATUS.search(text)
    return f"{kind} HTTP {status.group(1)}" if status else kind


def record_failure(endpoint_id: int, exc: EhrError) -> None:
    """Keep one failed token request of the write-backs (when, its ``failure_class``) for
    the integration health report, on a connection of its own so the caller's session and
    transaction are untouched; rows past the retention time go in the same transaction.
    Needs an app context. Never raises: a report must not break delivery."""
    from ehr.models import BackendTokenFailure

    table = BackendTokenFailure.__table__
    now = utcnow()
    try:
        with db.engine.begin() as connection:
            connection.execute(table.insert().values(
                endpoint_id=endpoint_id, at=now, error=failure_class(exc)[:120]))
            connection.execute(table.delete().where(
                table.c.endpoint_id == endpoint_id,
                table.c.at < now - timedelta(days=TOKEN_FAILURE_RETENTION_DAYS)))
    except Exception:  # noqa: BLE001  (the report's edge: log, delivery goes on)
        log.warning("backend token failure not recorded", exc_info=True)
