"""Registered SMART clients and how the token endpoint authenticates them.

Two methods, as advertised in smart-configuration: ``client_secret_basic`` (HTTP Basic,
secret compared by hash in constant time) and ``private_key_jwt`` (a signed assertion
verified against the JWKS the client registered, fetched over HTTP each time so a
rotated key is picked up at once). The staff sign-in provider (``idp.py``) also takes
``client_secret_post``.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote_plus

import requests
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey
from sqlalchemy.exc import IntegrityError

from extensions import db
from sandbox_ehr.common import UTC, public_base, sha256_hex, token_url, utcnow
from sandbox_ehr.errors import InvalidClient
from sandbox_ehr.models import SandboxAssertionJti, SandboxClient

log = logging.getLogger(__name__)

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGS = ("RS384", "ES384", "RS256")
_MAX_ASSERTION_LIFETIME = timedelta(minutes=5)
_CLOCK_SKEW = timedelta(seconds=30)
_JWKS_TIMEOUT_S = 5
APP_CLIENT_ID = "virtual-visits"


@dataclass(frozen=True)
class Client:
    """A registered client as the OAuth code sees it (no secret material)."""

    client_id: str
    name: str
    redirect_uris: tuple[str, ...]
    jwks_url: str | None
    has_secret: bool


def _to_client(row: SandboxClient) -> Client:
    return Client(row.client_id, row.name, tuple(row.redirect_uris), row.jwks_url,
                  row.secret_hash is not None)


def register_client(client_id: str, *, redirect_uris: list[str] | tuple[str, ...],
                    jwks_url: str | None = None, secret: str | None = None,
                    name: str | None = None) -> Client:
    """Create or replace a client; at least one of ``jwks_url`` and ``secret`` is needed."""
    if not jwks_url and not secret:
        raise ValueError("a client needs a jwks_url (private_key_jwt) or a secret")
    if not redirect_uris:
        raise ValueError("a client needs at least one redirect URI")
    row = db.session.get(SandboxClient, client_id) or SandboxClient(client_id=client_id)
    row.name = name or client_id
    row.redirect_uris = list(redirect_uris)
    row.jwks_url = jwks_url
    row.secret_hash = sha256_hex(secret) if secret else None
    db.session.add(row)
    db.session.commit()
    return _to_client(row)


def register_app_client() -> Client:
    """This app itself, as the EHR knows it: private_key_jwt against our published JWKS;
    the admin's approval sign-in (a standalone launch) comes back to its own callback."""
    base = public_base()
    return register_client(
        APP_CLIENT_ID,
        redirect_uris=[base + "/launch/callback", base + "/patient/launch/callback",
                       base + "/admin/endpoints/approve/callback"],
        jwks_url=base + "/.well-known/jwks.json",
        name="Virtual Visits",
    )


def get_client(client_id: str | None) -> Client | None:
    if not client_id:
        return None
    row = db.session.get(SandboxClient, client_id)
    return _to_client(row) if row else None


def authenticate(form: dict[str, str], authorization: str | None) -> Client:
    """The client calling the token endpoint, or InvalidClient."""
    if authorization and authorization.lower().startswith("basic "):
        if form.get("client_assertion"):
            raise InvalidClient("use one client authentication method, not two", basic=True)
        client = _authenticate_basic(authorization)
    elif form.get("client_assertion") or form.get("client_assertion_type"):
        client = _authenticate_assertion(form.get("client_assertion_type"),
                                         form.get("client_assertion"))
    else:
        raise InvalidClient("client authentication required (client_secret_basic or "
                            "private_key_jwt)", basic=True)
    claimed = form.get("client_id")
    if claimed and claimed != client.client_id:
        raise InvalidClient("client_id does not match the authenticated client")
    return client


def _authenticate_basic(authorization: str) -> Client:
    try:
        decoded = base64.b64decode(authorization.split(" ", 1)[1].strip(), validate=True)
        user, _, password = decoded.decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials", basic=True) from None
    # RFC 6749 2.3.1: both parts are form-urlencoded before Basic encoding.
    return _check_secret(unquote_plus(user), unquote_plus(password), basic=True)


def authenticate_secret(form: dict[str, str], authorization: str | None) -> Client:
    """A client authenticating with its secret only, as an OpenID provider's token
    endpoint expects: ``client_secret_basic`` or ``client_secret_post``, never both."""
    posted = form.get("client_secret")
    if authorization and authorization.lower().startswith("basic "):
        if posted:
            raise InvalidClient("use one client authentication method, not two", basic=True)
        client = _authenticate_basic(authorization)
    elif posted:
        client = _check_secret(form.get("client_id") or "", posted, basic=False)
    else:
        raise InvalidClient("client authentication required (client_secret_basic or "
                            "client_secret_post)", basic=True)
    claimed = form.get("client_id")
    if claimed and claimed != client.client_id:
        raise InvalidClient("client_id does not match the authenticated client")
    return client


def _check_secret(client_id: str, secret: str, *, basic: bool) -> Client:
    row = db.session.get(SandboxClient, client_id)
    # Compare against a dummy hash for unknown clients too, so timing doesn't tell them apart.
    expected = row.secret_hash if row and row.secret_hash else sha256_hex("\0no-secret")
    if not hmac.compare_digest(expected, sha256_hex(secret)) or not row or not row.secret_hash:
        raise InvalidClient("unknown client or wrong secret", basic=basic)
    return _to_client(row)


def _authenticate_assertion(assertion_type: str | None, assertion: str | None) -> Client:
    if assertion_type != ASSERTION_TYPE or not assertion:
        raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
    try:
        compact = jws.extract_compact(assertion.encode("ascii"))
        header = compact.headers()
        unverified = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeEncodeError):
        raise InvalidClient("client_assertion is not a compact JWS") from None
    alg = header.get("alg")
    if alg not in ASSERTION_ALGS:
        raise InvalidClient(f"client_assertion alg must be one of {', '.join(ASSERTION_ALGS)}")
    client_id = unverified.get("iss") if isinstance(unverified, dict) else None
    row = db.session.get(SandboxClient, client_id) if isinstance(client_id, str) else None
    if row is None or not row.jwks_url:
        raise InvalidClient("unknown client, or it has no registered JWKS URL")
    claims = _verify_signature(assertion, alg, header.get("kid"), row.jwks_url)
    _check_assertion_claims(claims, row.client_id)
    _remember_jti(row.client_id, claims["jti"], claims["exp"])
    return _to_client(row)


def _verify_signature(assertion: str, alg: str, kid: str | None, url: str) -> dict[str, Any]:
    candidates = [key for key in _fetch_jwks(url).keys
                  if (kid is None or key.kid == kid) and _fits(key, alg)]
    if not candidates:
        raise InvalidClient("no key in the client's JWKS matches the assertion's kid and alg")
    for key in candidates:
        try:
            return jwt.decode(assertion, key, algorithms=[alg]).claims
        except JoseError:
            continue
    raise InvalidClient("client_assertion signature does not verify")


def _fits(key: Any, alg: str) -> bool:
    if alg.startswith("RS"):
        return isinstance(key, RSAKey)
    return isinstance(key, ECKey) and key.as_dict(private=False).get("crv") == "P-384"


def _fetch_jwks(url: str) -> KeySet:
    try:
        response = requests.get(url, timeout=_JWKS_TIMEOUT_S,
                                headers={"Accept": "application/json"})
        response.raise_for_status()
        return KeySet.import_key_set(response.json())
    except (requests.RequestException, ValueError, JoseError, TypeError, KeyError) as exc:
        log.warning("client JWKS could not be fetched or read",
                    extra={"jwks_url": url, "error": type(exc).__name__})
        raise InvalidClient("the client's JWKS could not be fetched") from None


def _check_assertion_claims(claims: dict[str, Any], client_id: str) -> None:
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClient("client_assertion iss and sub must both be the client_id")
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if token_url() not in audiences:
        raise InvalidClient("client_assertion aud must be the token endpoint URL")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise InvalidClient("client_assertion needs a numeric exp")
    now = utcnow()
    expires = datetime.fromtimestamp(exp, UTC)
    if expires <= now - _CLOCK_SKEW:
        raise InvalidClient("client_assertion has expired")
    if expires > now + _MAX_ASSERTION_LIFETIME + _CLOCK_SKEW:
        raise InvalidClient("client_assertion exp is more than 5 minutes ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise InvalidClient("client_assertion needs a jti")


def _remember_jti(client_id: str, jti: str, exp: float) -> None:
    """Record the jti until its assertion expires; a second insert is a replay."""
    now = utcnow()
    db.session.execute(db.delete(SandboxAssertionJti).where(SandboxAssertionJti.expires_at < now))
    db.session.add(SandboxAssertionJti(client_id=client_id, jti=jti,
                                       expires_at=datetime.fromtimestamp(exp, UTC) + _CLOCK_SKEW))
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise InvalidClient("client_assertion jti was already used") from None
