"""SMART App Launch 2.0 for the sandbox: EHR launch, standalone sign-in (openid fhirUser
only), authorize (auto-approved), token.

Every check the real EHRs make is made here too, so the app's SMART client is tested
against something strict: exact redirect_uri and aud, PKCE S256 only, single-use codes
that expire in a minute, and authenticated confidential clients.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from extensions import db
from sandbox_ehr import clients, keys, scopes, store
from sandbox_ehr.common import (config_seconds, fhir_base, public_base, random_token,
                                sha256_hex, utcnow)
from sandbox_ehr.errors import (AuthorizeRedirectError, AuthorizeRejected, InvalidClient,
                                OAuthError)
from sandbox_ehr.models import SandboxAccessToken, SandboxAuthCode, SandboxLaunch

AUDIENCES = {"provider": "/launch", "patient": "/patient/launch"}
_PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")
_PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")
# Marks, in a code's context, the codes the staff sign-in provider (idp.py) issued.
IDP_CODE = "idp"
# A standalone launch (no EHR launch context) signs this practitioner in without a form,
# as the EHR launch does for the appointment's practitioner; it only says who they are.
STANDALONE_USER = "Practitioner/prac-1"
STANDALONE_SCOPES = ("openid", "fhirUser", "profile")


class UnknownAppointment(LookupError):
    """A launch was asked for an appointment the sandbox does not have."""


@dataclass(frozen=True)
class Launch:
    launch_id: str
    redirect_url: str


@dataclass(frozen=True)
class AccessGrant:
    """What a valid bearer token allows: its client, scopes and launch context."""

    client_id: str
    scope: str
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def patient(self) -> str | None:
        return self.context.get("patient")


# --- launch -----------------------------------------------------------------------------

def create_launch(audience: str, appointment_id: str, *, target: str | None = None) -> Launch:
    """Record a launch for an appointment and say where the EHR would send the browser.

    ``target`` overrides the app's launch URL, but only within PUBLIC_BASE_URL, so the
    sandbox cannot be used to bounce people to another site.
    """
    if audience not in AUDIENCES:
        raise ValueError(f"audience must be one of {', '.join(AUDIENCES)}")
    appointment = store.read("Appointment", appointment_id)
    if appointment is None:
        raise UnknownAppointment(appointment_id)
    patient_id = _participant_id(appointment, "Patient")
    practitioner_id = _participant_id(appointment, "Practitioner")
    encounters = store.find("Encounter", {"appointment": [f"Appointment/{appointment_id}"]})
    context = {
        "audience": audience,
        "patient": patient_id,
        "encounter": encounters[0]["id"] if encounters else None,
        "appointment": appointment_id,
        "fhirUser": (f"Practitioner/{practitioner_id}" if audience == "provider"
                     else f"Patient/{patient_id}"),
    }
    launch_id = random_token(24)
    db.session.add(SandboxLaunch(
        id=launch_id, context=context,
        expires_at=utcnow() + timedelta(seconds=config_seconds("SANDBOX_LAUNCH_TTL_SECONDS"))))
    db.session.commit()
    destination = public_base() + AUDIENCES[audience]
    if target and _within_public_base(target):
        destination = target
    return Launch(launch_id, add_query(destination, {"iss": fhir_base(), "launch": launch_id}))


def _participant_id(appointment: dict[str, Any], resource_type: str) -> str | None:
    for participant in appointment.get("participant", []):
        reference = (participant.get("actor") or {}).get("reference", "")
        if reference.startswith(resource_type + "/"):
            return reference.split("/", 1)[1]
    return None


def _within_public_base(url: str) -> bool:
    base = public_base()
    return url == base or url.startswith((base + "/", base + "?"))


def add_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


# --- authorize --------------------------------------------------------------------------

def check_authorize_request(params: Mapping[str, str], *, needs_secret: bool = False):
    """The checks every authorize endpoint starts with (RFC 6749 4.1.2.1): an unknown
    client or unregistered redirect_uri is refused without redirecting; then code flow
    and a state are required. Returns the client, redirect_uri, state and a ``fail``
    that builds the error to send back to the client."""
    client = clients.get_client(params.get("client_id"))
    if client is None or (needs_secret and not client.has_secret):
        raise AuthorizeRejected("Unknown client_id.")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        raise AuthorizeRejected("redirect_uri is not registered for this client.")
    state = params.get("state") or None

    def fail(error: str, description: str) -> AuthorizeRedirectError:
        return AuthorizeRedirectError(error, description, redirect_uri=redirect_uri, state=state)

    if params.get("response_type") != "code":
        raise fail("unsupported_response_type", "response_type must be code")
    if not state:
        raise fail("invalid_request", "state is required")
    return client, redirect_uri, state, fail


def authorize(params: Mapping[str, str]) -> str:
    """Approve an authorization request; return the redirect URL carrying code and state.

    Raises AuthorizeRejected when we must not redirect (unknown client, unregistered
    redirect_uri) and AuthorizeRedirectError for errors the client should hear about.
    """
    client, redirect_uri, state, fail = check_authorize_request(params)
    if params.get("aud") != fhir_base():
        raise fail("invalid_request", "aud must be this server's FHIR base URL")
    if params.get("code_challenge_method") != "S256":
        raise fail("invalid_request", "code_challenge_method must be S256")
    challenge = params.get("code_challenge", "")
    if not is_pkce_challenge(challenge):
        raise fail("invalid_request", "code_challenge (S256, base64url) is required")
    granted = scopes.grant(params.get("scope", ""))
    if not granted:
        raise fail("invalid_scope", "no supported scope was requested")
    if "launch" in granted:
        launch = _live_launch(params.get("launch"))
        if launch is None:
            raise fail("invalid_request", "launch is missing, unknown or expired")
        context = launch.context
    elif {"openid", "fhirUser"} <= set(granted) and not params.get("launch"):
        # Standalone sign-in (the admin's approval): who the user is, nothing else.
        granted = [scope for scope in granted if scope in STANDALONE_SCOPES]
        context = {"audience": "standalone", "fhirUser": STANDALONE_USER}
    else:
        raise fail("invalid_scope", "request the launch scope (EHR launch), or openid and "
                                    "fhirUser without a launch (standalone sign-in)")

    code = random_token()
    db.session.add(SandboxAuthCode(
        code_hash=sha256_hex(code), client_id=client.client_id, redirect_uri=redirect_uri,
        code_challenge=challenge, scope=" ".join(granted), context=context,
        nonce=params.get("nonce") or None,
        expires_at=utcnow() + timedelta(seconds=config_seconds("SANDBOX_CODE_TTL_SECONDS"))))
    db.session.commit()
    return add_query(redirect_uri, {"code": code, "state": state})


def is_pkce_challenge(value: str) -> bool:
    """An S256 challenge: 43 base64url characters (RFC 7636 4.2)."""
    return bool(_PKCE_CHALLENGE.match(value or ""))


def _live_launch(launch_id: str | None) -> SandboxLaunch | None:
    if not launch_id:
        return None
    launch = db.session.get(SandboxLaunch, launch_id)
    if launch is None or launch.expires_at <= utcnow():
        return None
    return launch


def error_redirect(error: AuthorizeRedirectError) -> str:
    """The client's redirect_uri with ``error``, ``error_description`` and ``state``."""
    params = {"error": error.error, "error_description": error.description}
    if error.state:
        params["state"] = error.state
    return add_query(error.redirect_uri, params)


# --- token ------------------------------------------------------------------------------

GRANT_TYPES = ("authorization_code", "client_credentials")


def token(form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
    """The token endpoint: an authorization code (the launch) or client credentials
    (SMART Backend Services)."""
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type == "authorization_code":
        return exchange_code(form, authorization)
    if grant_type == "client_credentials":
        return client_credentials(form, authorization)
    raise OAuthError("unsupported_grant_type",
                     f"grant_type must be one of {', '.join(GRANT_TYPES)}")


def client_credentials(form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
    """SMART Backend Services: a private_key_jwt client gets a system/ token, no context.

    Asymmetric authentication only, as the Backend Services spec requires: a shared
    secret is refused even for a client that has one.
    """
    if authorization and authorization.lower().startswith("basic "):
        raise InvalidClient("client_credentials requires private_key_jwt, not a client secret",
                            basic=True)
    if not form.get("client_assertion"):
        raise InvalidClient("client_credentials requires a private_key_jwt client_assertion")
    client = clients.authenticate(form, None)
    granted = scopes.grant_system(form.get("scope", ""))
    if not granted:
        raise OAuthError("invalid_scope", "request at least one supported system/ scope, "
                                          "e.g. system/AuditEvent.c")
    lifetime = config_seconds("SANDBOX_TOKEN_TTL_SECONDS")
    access_token = random_token()
    db.session.add(SandboxAccessToken(
        token_hash=sha256_hex(access_token), client_id=client.client_id, code_hash=None,
        scope=" ".join(granted), context={},
        expires_at=utcnow() + timedelta(seconds=lifetime)))
    db.session.commit()
    return {"access_token": access_token, "token_type": "Bearer", "expires_in": lifetime,
            "scope": " ".join(granted)}


def exchange_code(form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
    """Trade an authorization code for an access token (and an id_token with openid)."""
    client = clients.authenticate(form, authorization)
    row = redeem_code(form, client.client_id)
    return _issue_tokens(client.client_id, row)


def redeem_code(form: Mapping[str, str], client_id: str, *, idp: bool = False
                ) -> SandboxAuthCode:
    """Check an authorization code for ``client_id`` (redirect_uri, PKCE S256, expiry) and
    use it up. The SMART server and the staff sign-in provider (``idp``) share the code
    table, so each accepts only the codes it issued."""
    code, redirect_uri, verifier = (form.get("code"), form.get("redirect_uri"),
                                    form.get("code_verifier"))
    if not code or not redirect_uri or not verifier:
        raise OAuthError("invalid_request", "code, redirect_uri and code_verifier are required")

    row = db.session.get(SandboxAuthCode, sha256_hex(code))
    if row is None or bool((row.context or {}).get(IDP_CODE)) != idp:
        raise OAuthError("invalid_grant", "unknown authorization code")
    if row.used_at is not None:
        _revoke_tokens_from(row.code_hash)
        raise OAuthError("invalid_grant", "authorization code was already used; "
                                          "tokens issued from it are revoked")
    if row.expires_at <= utcnow():
        raise OAuthError("invalid_grant", "authorization code has expired")
    if row.client_id != client_id:
        raise OAuthError("invalid_grant", "authorization code was issued to another client")
    if not hmac.compare_digest(row.redirect_uri, redirect_uri):
        raise OAuthError("invalid_grant", "redirect_uri differs from the authorize request")
    if not _PKCE_VERIFIER.match(verifier):
        raise OAuthError("invalid_request", "code_verifier must be 43-128 unreserved characters")
    if not hmac.compare_digest(_s256(verifier), row.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    _mark_used(row.code_hash)
    return row


def _s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _mark_used(code_hash: str) -> None:
    """Set used_at only if still unset; losing that race means a concurrent reuse."""
    result = db.session.execute(
        db.update(SandboxAuthCode)
        .where(SandboxAuthCode.code_hash == code_hash, SandboxAuthCode.used_at.is_(None))
        .values(used_at=utcnow()))
    db.session.commit()
    if result.rowcount != 1:
        _revoke_tokens_from(code_hash)
        raise OAuthError("invalid_grant", "authorization code was already used")


def _revoke_tokens_from(code_hash: str) -> None:
    db.session.execute(
        db.update(SandboxAccessToken)
        .where(SandboxAccessToken.code_hash == code_hash, SandboxAccessToken.revoked_at.is_(None))
        .values(revoked_at=utcnow()))
    db.session.commit()


def _issue_tokens(client_id: str, code: SandboxAuthCode) -> dict[str, Any]:
    lifetime = config_seconds("SANDBOX_TOKEN_TTL_SECONDS")
    now = utcnow()
    access_token = random_token()
    granted = code.scope.split()
    context = dict(code.context)
    db.session.add(SandboxAccessToken(
        token_hash=sha256_hex(access_token), client_id=client_id, code_hash=code.code_hash,
        scope=code.scope, context=context, expires_at=now + timedelta(seconds=lifetime)))
    db.session.commit()

    body: dict[str, Any] = {"access_token": access_token, "token_type": "Bearer",
                            "expires_in": lifetime, "scope": code.scope}
    if context.get("patient") and {"launch", "launch/patient"} & set(granted):
        body["patient"] = context["patient"]
    if context.get("encounter") and {"launch", "launch/encounter"} & set(granted):
        body["encounter"] = context["encounter"]
    if context.get("appointment") and "launch" in granted:
        body["fhirContext"] = [{"reference": f"Appointment/{context['appointment']}"}]
    # Inside the EHR's own window the EHR shows the banner; the portal launch does not.
    body["need_patient_banner"] = context.get("audience") == "patient"
    if "openid" in granted and context.get("fhirUser"):
        body["id_token"] = _id_token(client_id, context["fhirUser"], code.nonce, now, lifetime)
    return body


def _id_token(client_id: str, fhir_user: str, nonce: str | None, now, lifetime: int) -> str:
    issued = int(now.timestamp())
    claims: dict[str, Any] = {"iss": fhir_base(), "sub": fhir_user, "aud": client_id,
                              "iat": issued, "exp": issued + lifetime,
                              "fhirUser": f"{fhir_base()}/{fhir_user}"}
    if nonce:
        claims["nonce"] = nonce
    return keys.sign(claims)


def check_access_token(token: str | None) -> AccessGrant | None:
    """The grant behind a bearer token, or None if unknown, expired or revoked."""
    if not token:
        return None
    row = db.session.get(SandboxAccessToken, sha256_hex(token))
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        return None
    return AccessGrant(row.client_id, row.scope, dict(row.context))
