"""OpenID Connect client for the organization's sign-in provider: discovery, the
authorize request (code flow, PKCE S256, state, nonce), the code exchange with a client
secret, and id_token validation.

authlib builds the authorize URL and performs the token request, as it does for the
SMART launch (``ehr.smart``), whose JWKS fetch and id_token checks (signature against
the provider's JWKS, ``iss``, ``aud``/``azp``, ``exp``, ``iat``, ``nonce``, ``sub``) are
reused unchanged. Nothing here touches Flask's request or session.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from authlib.integrations.requests_client import OAuth2Session

from ehr import smart
from ehr.errors import EhrUnavailable, InvalidIdToken, TokenRefused

HTTP_TIMEOUT_S = 10.0
# Time allowed between our authorize redirect and the provider sending the browser back;
# a password reset or MFA enrolment on the way can take a while.
PENDING_TTL_S = 600
_SECRET_METHODS = ("client_secret_basic", "client_secret_post")


class OidcError(Exception):
    """Base of sign-in provider failures; messages never carry tokens or claims."""


class IdpUnavailable(OidcError):
    """The provider did not answer (connection, timeout, 5xx): worth retrying later."""


class IdpMisconfigured(OidcError):
    """The discovery document is unusable, or names another issuer than configured."""


class IdpRefused(OidcError):
    """The token endpoint answered with an OAuth error (``error`` is its code)."""

    def __init__(self, error: str) -> None:
        super().__init__(f"token request refused: {error}")
        self.error = error


class IdTokenRejected(OidcError):
    """The id_token failed a check; ``reason`` names it (no token content)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"id_token rejected: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ProviderMetadata:
    """The endpoints we use from ``<issuer>/.well-known/openid-configuration``."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    token_auth_methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class PendingLogin:
    """What the callback needs from the authorize leg. Kept in the signed session cookie
    (single use): the PKCE verifier never leaves the browser it was made for."""

    state: str
    code_verifier: str = field(repr=False)
    nonce: str
    next_url: str
    issuer: str
    token_url: str
    jwks_uri: str
    auth_method: str
    created_at: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingLogin:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})

    def is_expired(self, now: float | None = None) -> bool:
        return (now or time.time()) > int(self.created_at or 0) + PENDING_TTL_S


@dataclass(frozen=True)
class StaffIdentity:
    """Who signed in: the account (issuer + subject) and what the provider called them."""

    issuer: str
    subject: str
    email: str | None
    name: str | None
    authenticated_at: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StaffIdentity:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})


def discover(issuer: str, *, http: Any = requests) -> ProviderMetadata:
    """Read the provider's discovery document. Its ``issuer`` must be the configured one
    (OpenID Connect Discovery 4.3), or id_tokens could be accepted from another issuer."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        response = http.get(url, headers={"Accept": "application/json"},
                            timeout=HTTP_TIMEOUT_S, allow_redirects=False)
    except requests.RequestException as exc:
        raise IdpUnavailable(f"discovery failed: {type(exc).__name__}") from None
    if response.status_code >= 500:
        raise IdpUnavailable(f"discovery answered {response.status_code}")
    try:
        document = response.json() if response.status_code == 200 else None
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise IdpMisconfigured(f"no discovery document at {urlsplit(url).path}")
    if str(document.get("issuer") or "").rstrip("/") != issuer.rstrip("/"):
        raise IdpMisconfigured("the discovery document names another issuer")
    methods = document.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    return ProviderMetadata(
        issuer=document["issuer"],
        authorization_endpoint=_http_url(document.get("authorization_endpoint")),
        token_endpoint=_http_url(document.get("token_endpoint")),
        jwks_uri=_http_url(document.get("jwks_uri")),
        token_auth_methods=tuple(m for m in methods if isinstance(m, str)))


def _http_url(value: Any) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise IdpMisconfigured("the discovery document lacks an endpoint URL")
    return value


def authorization_request(metadata: ProviderMetadata, *, client_id: str,
                          client_secret: str | None, redirect_uri: str, scope: str,
                          next_url: str) -> tuple[str, PendingLogin]:
    """The authorize URL to send the browser to, and the state to keep until it returns."""
    pending = PendingLogin(
        state=secrets.token_urlsafe(32), code_verifier=secrets.token_urlsafe(48),
        nonce=secrets.token_urlsafe(32), next_url=next_url, issuer=metadata.issuer,
        token_url=metadata.token_endpoint, jwks_uri=metadata.jwks_uri,
        auth_method=_auth_method(metadata, client_secret), created_at=int(time.time()))
    client = OAuth2Session(client_id=client_id, redirect_uri=redirect_uri, scope=scope,
                           code_challenge_method="S256")
    url, _state = client.create_authorization_url(
        metadata.authorization_endpoint, state=pending.state,
        code_verifier=pending.code_verifier, nonce=pending.nonce)
    return url, pending


def _auth_method(metadata: ProviderMetadata, client_secret: str | None) -> str:
    """client_secret_basic unless the provider only takes the secret in the form body;
    "none" (PKCE alone) for a public client."""
    if not client_secret:
        return "none"
    for method in _SECRET_METHODS:
        if method in metadata.token_auth_methods:
            return method
    return "client_secret_basic"


def exchange_code(pending: PendingLogin, *, code: str, client_id: str,
                  client_secret: str | None, redirect_uri: str) -> str:
    """Trade the code (with the PKCE verifier) for tokens; return the id_token only: we
    never call the provider's APIs, so its access token is dropped at once."""
    client = OAuth2Session(client_id=client_id, client_secret=client_secret or None,
                           redirect_uri=redirect_uri,
                           token_endpoint_auth_method=pending.auth_method)
    try:
        token = smart.fetch_code_token(client, pending.token_url, code=code,
                                       code_verifier=pending.code_verifier)
    except TokenRefused as exc:
        raise IdpRefused(exc.error) from None
    except EhrUnavailable as exc:
        raise IdpUnavailable(str(exc)) from None
    id_token = token.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise IdpRefused("no_id_token")
    return id_token


def verify_id_token(id_token: str, pending: PendingLogin, *, client_id: str,
                    now: float | None = None) -> StaffIdentity:
    """Check the id_token against the provider's JWKS and this login's nonce."""
    try:
        jwks = smart.issuer_keys(pending.jwks_uri, id_token)
    except EhrUnavailable:
        raise IdpUnavailable("the provider's JWKS could not be read") from None
    try:
        checked = smart.validate_id_token(id_token, jwks, issuers=pending.issuer,
                                          client_id=client_id, nonce=pending.nonce, now=now)
    except InvalidIdToken as exc:
        raise IdTokenRejected(exc.reason) from None
    claims = checked.claims
    return StaffIdentity(
        issuer=pending.issuer, subject=checked.subject,
        email=claims.get("email") if isinstance(claims.get("email"), str) else None,
        name=claims.get("name") if isinstance(claims.get("name"), str) else None,
        authenticated_at=int(now or time.time()))
