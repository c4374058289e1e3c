"""SMART App Launch 2 (EHR launch), client side: discovery, the authorize request, the
code exchange with ``private_key_jwt``, id_token validation, and the launch context.

authlib builds the authorize URL (PKCE S256) and performs the token request; joserfc
verifies the id_token. Nothing here touches Flask's request or session: the provider
and patient launch blueprints keep the ``PendingLaunch`` between the two legs.
"""
from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import requests
from authlib.common.urls import add_params_to_qs
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet, RSAKey

from ehr.errors import EhrUnavailable, InvalidIdToken, SmartError, TokenRefused, UntrustedUrl
from ehr.fhir import relative_reference

log = logging.getLogger(__name__)

DEFAULT_SCOPES = "launch openid fhirUser user/*.rs"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Asymmetric only: an HMAC id_token would be signed with a secret we do not have, and
# accepting "none" or HS* is the classic JWT confusion attack.
ID_TOKEN_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
HTTP_TIMEOUT_S = 10.0
# The EHR's clock and ours may disagree a little.
CLOCK_LEEWAY_S = 60
# Time allowed between our authorize redirect and the EHR sending the browser back.
PENDING_TTL_S = 600
# When the token response has no expires_in, assume the shortest common lifetime.
DEFAULT_TOKEN_LIFETIME_S = 3600
_EC_CURVES = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}


# --- discovery --------------------------------------------------------------------------

@dataclass(frozen=True)
class SmartConfiguration:
    """The endpoints of an EHR's authorization server, from its discovery document."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str | None = None
    issuer: str | None = None


def discover(iss: str, *, http: Any = requests) -> SmartConfiguration:
    """Read ``<iss>/.well-known/smart-configuration``; fall back to the CapabilityStatement's
    oauth-uris extension (``<iss>/metadata``) for servers that predate SMART 2.

    Raises EhrUnavailable when neither answers and SmartError when they answer nonsense.
    ``http`` is anything with requests' ``get`` (the module itself, or a Session)."""
    base = iss.rstrip("/")
    document = _get_json(http, f"{base}/.well-known/smart-configuration")
    if document and document.get("authorization_endpoint") and document.get("token_endpoint"):
        return SmartConfiguration(
            authorization_endpoint=_http_url(document["authorization_endpoint"]),
            token_endpoint=_http_url(document["token_endpoint"]),
            jwks_uri=_http_url(document["jwks_uri"]) if document.get("jwks_uri") else None,
            issuer=document.get("issuer") if isinstance(document.get("issuer"), str) else None)
    statement = _get_json(http, f"{base}/metadata",
                          accept="application/fhir+json, application/json")
    uris = _oauth_uris(statement or {})
    if uris.get("authorize") and uris.get("token"):
        return SmartConfiguration(authorization_endpoint=_http_url(uris["authorize"]),
                                  token_endpoint=_http_url(uris["token"]))
    if document is None and statement is None:
        raise EhrUnavailable("neither smart-configuration nor metadata could be read")
    raise SmartError("the EHR publishes no SMART authorize and token endpoints")


def _get_json(http: Any, url: str,
              accept: str = "application/json") -> dict[str, Any] | None:
    """The JSON object at ``url``; None for a 4xx or a non-object; EhrUnavailable when
    the server cannot be reached or fails (5xx)."""
    try:
        response = http.get(url, headers={"Accept": accept}, timeout=HTTP_TIMEOUT_S)
    except requests.RequestException as exc:
        raise EhrUnavailable(f"{urlsplit(url).netloc} unreachable: {type(exc).__name__}") \
            from None
    if response.status_code >= 500:
        raise EhrUnavailable(f"{urlsplit(url).path} answered {response.status_code}")
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _oauth_uris(statement: dict[str, Any]) -> dict[str, str]:
    for rest in statement.get("rest") or []:
        for extension in ((rest.get("security") or {}).get("extension") or []):
            if str(extension.get("url", "")).endswith("/oauth-uris"):
                return {e.get("url"): e.get("valueUri") for e in extension.get("extension") or []
                        if isinstance(e, dict)}
    return {}


def _http_url(value: Any) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") \
            or not urlsplit(value).netloc:
        raise SmartError("the EHR's SMART configuration has an endpoint that is not a URL")
    return value


# --- authorize --------------------------------------------------------------------------

@dataclass(frozen=True)
class PendingLaunch:
    """What the callback needs from the authorize leg. Kept in the signed session cookie
    (single use): the PKCE verifier never leaves the browser it was made for."""

    state: str
    code_verifier: str = field(repr=False)
    nonce: str
    endpoint_id: int
    iss: str
    token_url: str
    jwks_uri: str | None
    issuer: str | None
    created_at: int
    # The client id the authorize request named; the token request and the id_token's
    # audience must match it. None in launches begun before it was kept.
    client_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingLaunch:
        return cls(**{name: data.get(name) for name in cls.__dataclass_fields__})

    def is_expired(self, now: float | None = None) -> bool:
        return (now or time.time()) > self.created_at + PENDING_TTL_S


def authorization_request(config: SmartConfiguration, *, iss: str, launch: str | None,
                          client_id: str, redirect_uri: str, scope: str,
                          endpoint_id: int) -> tuple[str, PendingLaunch]:
    """The authorize URL to send the browser to, and the state to keep until it returns.

    ``aud`` is the ``iss`` exactly as the EHR sent it: EHRs compare it byte for byte.
    ``launch`` None is a standalone launch (the admin's approval sign-in): no parameter."""
    pending = PendingLaunch(
        state=secrets.token_urlsafe(32), code_verifier=secrets.token_urlsafe(48),
        nonce=secrets.token_urlsafe(32), endpoint_id=endpoint_id, iss=iss,
        token_url=config.token_endpoint, jwks_uri=config.jwks_uri, issuer=config.issuer,
        created_at=int(time.time()), client_id=client_id)
    client = OAuth2Session(client_id=client_id, redirect_uri=redirect_uri, scope=scope,
                           code_challenge_method="S256")
    url, _state = client.create_authorization_url(
        config.authorization_endpoint, state=pending.state, code_verifier=pending.code_verifier,
        nonce=pending.nonce, aud=iss, launch=launch)
    return url, pending


# --- token ------------------------------------------------------------------------------

@dataclass(frozen=True)
class TokenResponse:
    """The parts of a SMART token response we use (the tokens are hidden from repr)."""

    access_token: str = field(repr=False)
    scope: str
    expires_in: int | None
    id_token: str | None = field(repr=False)
    patient: str | None
    encounter: str | None
    fhir_context: tuple[str, ...]


def fetch_code_token(client: OAuth2Session, token_url: str, *, code: str,
                     code_verifier: str) -> dict[str, Any]:
    """The authorization_code grant with PKCE through authlib (then closes ``client``),
    its failures named once: TokenRefused for an OAuth error or a 4xx, EhrUnavailable for
    a 5xx, 429 or no answer. Used for EHR launches and the staff sign-in alike."""
    try:
        return client.fetch_token(token_url, grant_type="authorization_code", code=code,
                                  code_verifier=code_verifier, timeout=HTTP_TIMEOUT_S,
                                  allow_redirects=False)
    except OAuthError as exc:
        raise TokenRefused(str(exc.error or "invalid_request"), exc.description) from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status == 429:
            raise EhrUnavailable(f"token endpoint answered {status}") from None
        raise TokenRefused(f"http_{status}") from None
    except (requests.RequestException, ValueError) as exc:
        raise EhrUnavailable(f"token endpoint failed: {type(exc).__name__}") from None
    finally:
        client.close()


def exchange_code(pending: PendingLaunch, *, code: str, client_id: str, redirect_uri: str,
                  assertion: Callable[[str, str], str] | None = None) -> TokenResponse:
    """Trade the authorization code, authenticating with a ``private_key_jwt`` assertion.

    ``assertion(client_id, token_url)`` signs it; by default ``ehr.keys.client_assertion``.
    Raises TokenRefused for an OAuth error and EhrUnavailable for a down token endpoint."""
    if assertion is None:
        from ehr.keys import client_assertion as assertion

    def private_key_jwt(auth, method, uri, headers, body):
        body = add_params_to_qs(body or "", [("client_assertion_type", ASSERTION_TYPE),
                                             ("client_assertion", assertion(client_id, uri))])
        return uri, headers, body

    client = OAuth2Session(client_id=client_id, redirect_uri=redirect_uri,
                           token_endpoint_auth_method="private_key_jwt")
    client.register_client_auth_method(("private_key_jwt", private_key_jwt))
    token = fetch_code_token(client, pending.token_url, code=code,
                             code_verifier=pending.code_verifier)
    access_token = token.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenRefused("no_access_token")
    return TokenResponse(
        access_token=access_token, scope=str(token.get("scope") or ""),
        expires_in=_int_or_none(token.get("expires_in")),
        id_token=token.get("id_token") if isinstance(token.get("id_token"), str) else None,
        patient=_str_or_none(token.get("patient")), encounter=_str_or_none(token.get("encounter")),
        fhir_context=tuple(_context_references(token.get("fhirContext"))))


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _context_references(items: Any) -> Iterable[str]:
    """References from SMART 2 ``fhirContext`` (objects with ``reference``; plain strings
    from early implementations are accepted too)."""
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict) and isinstance(item.get("reference"), str):
            yield item["reference"]


# --- id_token ---------------------------------------------------------------------------

@dataclass(frozen=True)
class IdToken:
    """The validated claims of an id_token."""

    subject: str
    fhir_user: str | None
    claims: dict[str, Any] = field(repr=False)


def fetch_jwks(jwks_uri: str, *, http: Any = requests) -> KeySet:
    """The issuer's public keys; EhrUnavailable if they cannot be fetched or read."""
    body = _get_json(http, jwks_uri)
    try:
        return KeySet.import_key_set(body)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError, KeyError, AttributeError):
        raise EhrUnavailable("the issuer's JWKS could not be read") from None


# An issuer's keys change rarely; a clinician's launch should not wait on a fetch each
# time. A token naming a kid the cached set lacks (the issuer rotated) refetches at once.
JWKS_CACHE_SECONDS = 300
_issuer_keys: dict[str, tuple[float, KeySet]] = {}


def issuer_keys(jwks_uri: str, id_token: str, *, http: Any = requests,
                now: float | None = None) -> KeySet:
    """The issuer's keys for checking ``id_token``: cached per URL for JWKS_CACHE_SECONDS,
    fetched again when stale or when the token's kid is not among them."""
    now = time.monotonic() if now is None else now
    kid = token_kid(id_token)
    cached = _issuer_keys.get(jwks_uri)
    if cached is not None and now - cached[0] < JWKS_CACHE_SECONDS and (
            kid is None or any(key.kid == kid for key in cached[1].keys)):
        return cached[1]
    keys = fetch_jwks(jwks_uri, http=http)
    _issuer_keys[jwks_uri] = (now, keys)
    return keys


def token_kid(id_token: str) -> str | None:
    """The ``kid`` a compact JWS names in its header, if it is readable and names one."""
    try:
        kid = jws.extract_compact(id_token.encode("ascii")).headers().get("kid")
    except (JoseError, ValueError, UnicodeEncodeError):
        return None
    return kid if isinstance(kid, str) else None


def validate_id_token(id_token: str, jwks: KeySet | dict[str, Any], *,
                      issuers: str | Iterable[str], client_id: str, nonce: str,
                      now: float | None = None, leeway: int = CLOCK_LEEWAY_S) -> IdToken:
    """Check signature (against every suitable key when there is no ``kid``), ``iss``,
    ``aud``, ``exp``, ``iat`` and ``nonce``; raise InvalidIdToken naming the failed check."""
    keyset = jwks if isinstance(jwks, KeySet) else KeySet.import_key_set(jwks)
    try:
        header = jws.extract_compact(id_token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeEncodeError):
        raise InvalidIdToken("not a compact JWS") from None
    alg = header.get("alg")
    if alg not in ID_TOKEN_ALGS:
        raise InvalidIdToken(f"alg {alg!r} is not accepted")
    kid = header.get("kid")
    candidates = [key for key in keyset.keys if _fits(key, alg) and (kid is None or key.kid == kid)]
    if not candidates:
        raise InvalidIdToken("no key in the issuer's JWKS matches the token's kid and alg")
    claims = None
    for key in candidates:
        try:
            claims = jwt.decode(id_token, key, algorithms=[alg]).claims
            break
        except (JoseError, ValueError):
            continue
    if claims is None:
        raise InvalidIdToken("signature does not verify")
    _check_claims(claims, issuers={issuers} if isinstance(issuers, str) else set(issuers),
                  client_id=client_id, nonce=nonce, now=now or time.time(), leeway=leeway)
    fhir_user = claims.get("fhirUser") or claims.get("profile")
    return IdToken(subject=claims["sub"], claims=claims,
                   fhir_user=fhir_user if isinstance(fhir_user, str) and fhir_user else None)


def _fits(key: Any, alg: str) -> bool:
    params = key.as_dict(private=False)
    if params.get("use", "sig") != "sig" or params.get("alg", alg) != alg:
        return False
    if alg.startswith("RS"):
        return isinstance(key, RSAKey)
    return isinstance(key, ECKey) and params.get("crv") == _EC_CURVES[alg]


def _check_claims(claims: dict[str, Any], *, issuers: set[str], client_id: str, nonce: str,
                  now: float, leeway: int) -> None:
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or issuer.rstrip("/") not in {i.rstrip("/") for i in issuers}:
        raise InvalidIdToken("iss is not the EHR's issuer")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if client_id not in audiences:
        raise InvalidIdToken("aud is not our client id")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise InvalidIdToken("several audiences and azp is not our client id")
    expires = claims.get("exp")
    if not _is_number(expires):
        raise InvalidIdToken("exp is missing")
    if expires < now - leeway:
        raise InvalidIdToken("expired")
    issued = claims.get("iat")
    if issued is not None and (not _is_number(issued) or issued > now + leeway):
        raise InvalidIdToken("iat is in the future")
    sent = claims.get("nonce")
    if not isinstance(sent, str) or not hmac.compare_digest(sent, nonce):
        raise InvalidIdToken("nonce does not match")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidIdToken("sub is missing")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --- launch context ---------------------------------------------------------------------

@dataclass(frozen=True)
class LaunchContext:
    """Who launched, about what: FHIR references relative to the EHR's base."""

    fhir_user: str | None
    patient_ref: str | None
    encounter_ref: str | None
    appointment_ref: str | None
    scope: str
    access_token: str = field(repr=False)
    expires_in: int


def launch_context(token: TokenResponse, id_token: IdToken | None,
                   fhir_base: str) -> LaunchContext:
    """Combine the token response and id_token into references we can read.

    fhirUser may be relative ("Practitioner/x") or an absolute URL, which must then sit
    under the FHIR base (InvalidIdToken otherwise)."""
    fhir_user = None
    if id_token and id_token.fhir_user:
        try:
            fhir_user = relative_reference(id_token.fhir_user, fhir_base)
        except (UntrustedUrl, ValueError):
            raise InvalidIdToken("fhirUser is not a reference on this FHIR server") from None
    appointment_ref = None
    for reference in token.fhir_context:
        try:
            candidate = relative_reference(reference, fhir_base)
        except (UntrustedUrl, ValueError):
            continue
        if candidate.startswith("Appointment/"):
            appointment_ref = candidate
            break
    return LaunchContext(
        fhir_user=fhir_user,
        patient_ref=_typed_reference("Patient", token.patient),
        encounter_ref=_typed_reference("Encounter", token.encounter),
        appointment_ref=appointment_ref, scope=token.scope, access_token=token.access_token,
        expires_in=token.expires_in if token.expires_in and token.expires_in > 0
        else DEFAULT_TOKEN_LIFETIME_S)


def _typed_reference(resource_type: str, resource_id: str | None) -> str | None:
    """``Patient/123`` from the bare id SMART puts in ``patient`` / ``encounter``."""
    if not resource_id or "/" in resource_id or len(resource_id) > 64:
        return None
    return f"{resource_type}/{resource_id}"
