"""SMART Backend Services tokens for write-backs: client_credentials with our private_key_jwt.

Write-backs (AuditEvents, device-test Observations) can be owed long after the
provider's launch token expired, or be retried after a restart, so they use a token of
their own: ``system/`` scopes, no user, no patient context. The token endpoint comes
from ``<fhir_base>/.well-known/smart-configuration``; tokens are kept in process memory
(never in the database, never logged) until shortly before they expire.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from ehr import keys
from ehr.errors import EhrUnavailable, SmartError, TokenRefused, UntrustedUrl
from ehr.models import EhrEndpoint
from settings import is_loopback

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


@dataclass(frozen=True)
class BackendToken:
    access_token: str
    scope: str
    expires_at: float  # time.monotonic() deadline, renewal margin already taken off

    def __repr__(self) -> str:  # never print the token itself
        return f"<BackendToken scope={self.scope!r}>"


_cache: dict[tuple[str, str, str], BackendToken] = {}
_lock = threading.Lock()


def _cache_key(endpoint: EhrEndpoint, scope: str) -> tuple[str, str, str]:
    return (endpoint.fhir_base_url.rstrip("/"), endpoint.client_id, scope)


def access_token(endpoint: EhrEndpoint, *, scope: str = BACKEND_SCOPES,
                 session: requests.Session | None = None) -> str:
    """A backend-services access token for ``endpoint``, from the cache or freshly issued.

    Raises EhrUnavailable (retry later), TokenRefused (OAuth error from the EHR) or
    SmartError (the EHR does not offer backend services as we need them).
    """
    key = _cache_key(endpoint, scope)
    with _lock:
        cached = _cache.get(key)
    if cached and cached.expires_at > time.monotonic():
        return cached.access_token
    fresh = _request_token(endpoint, scope, session or requests.Session())
    with _lock:
        _cache[key] = fresh
    return fresh.access_token


def forget(endpoint: EhrEndpoint, *, scope: str = BACKEND_SCOPES) -> None:
    """Drop the cached token (the EHR answered 401: revoked, or the EHR restarted)."""
    with _lock:
        _cache.pop(_cache_key(endpoint, scope), None)


def clear_cache() -> None:
    """Forget every cached token (tests, and after a key rotation if one wishes)."""
    with _lock:
        _cache.clear()


def token_endpoint(endpoint: EhrEndpoint, session: requests.Session | None = None) -> str:
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


def _request_token(endpoint: EhrEndpoint, scope: str, session: requests.Session) -> BackendToken:
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
