"""A minimal OpenID Connect provider standing in for an organization's staff sign-in
(Entra ID, Okta, Keycloak...) in the demo and the tests.

Authorization code flow only, auto-approving one configurable demo user
(``SANDBOX_IDP_USER``). It is as strict as the SMART side where it matters to the
client: registered redirect URIs, state, PKCE S256, single-use short-lived codes,
client_secret_basic or client_secret_post, RS256 id_tokens signed with the sandbox's
key (``keys.py``) carrying ``nonce``, ``sub`` and ``email``. The code table, the code
checks and the client registry are the SMART server's (``smart.py``, ``clients.py``).
"""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping

from flask import current_app

from extensions import db
from sandbox_ehr import clients, keys, smart
from sandbox_ehr.common import config_seconds, public_base, random_token, sha256_hex, utcnow
from sandbox_ehr.errors import OAuthError
from sandbox_ehr.models import SandboxAuthCode

SCOPES = ("openid", "email", "profile")
AUTH_METHODS = ("client_secret_basic", "client_secret_post")


def issuer() -> str:
    return public_base() + "/sandbox/idp"


def configuration() -> dict[str, Any]:
    """The discovery document (OpenID Connect Discovery 1.0, section 3)."""
    base = issuer()
    return {
        "issuer": base,
        "authorization_endpoint": base + "/authorize",
        "token_endpoint": base + "/token",
        "jwks_uri": base + "/jwks.json",
        "response_types_supported": ["code"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [keys.ID_TOKEN_ALG],
        "token_endpoint_auth_methods_supported": list(AUTH_METHODS),
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": list(SCOPES),
        "claims_supported": ["iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "email",
                             "email_verified", "name"],
    }


def authorize(params: Mapping[str, str]) -> str:
    """Sign the demo user in without a form; return the redirect carrying code and state.

    Raises AuthorizeRejected when we must not redirect (unknown client, unregistered
    redirect_uri) and AuthorizeRedirectError for errors the client should hear about."""
    client, redirect_uri, state, fail = smart.check_authorize_request(params, needs_secret=True)
    if params.get("code_challenge_method") != "S256" \
            or not smart.is_pkce_challenge(params.get("code_challenge", "")):
        raise fail("invalid_request", "code_challenge with code_challenge_method S256 is "
                                      "required")
    requested = params.get("scope", "").split()
    if "openid" not in requested:
        raise fail("invalid_scope", "the openid scope is required")
    granted = [scope for scope in requested if scope in SCOPES]
    user = dict(current_app.config["SANDBOX_IDP_USER"])
    code = random_token()
    db.session.add(SandboxAuthCode(
        code_hash=sha256_hex(code), client_id=client.client_id, redirect_uri=redirect_uri,
        code_challenge=params["code_challenge"], scope=" ".join(granted),
        context={smart.IDP_CODE: True, "user": user}, nonce=params.get("nonce") or None,
        expires_at=utcnow() + timedelta(seconds=config_seconds("SANDBOX_CODE_TTL_SECONDS"))))
    db.session.commit()
    return smart.add_query(redirect_uri, {"code": code, "state": state})


def token(form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
    """Exchange a code for an id_token (and an access token nothing accepts: the sandbox
    provider has no userinfo endpoint, everything is in the id_token)."""
    if form.get("grant_type") != "authorization_code":
        raise OAuthError("unsupported_grant_type", "grant_type must be authorization_code")
    client = clients.authenticate_secret(form, authorization)
    row = smart.redeem_code(form, client.client_id, idp=True)
    user = dict(row.context.get("user") or {})
    lifetime = config_seconds("SANDBOX_TOKEN_TTL_SECONDS")
    now = int(utcnow().timestamp())
    claims: dict[str, Any] = {"iss": issuer(), "sub": str(user.get("sub")),
                              "aud": client.client_id, "iat": now, "exp": now + lifetime,
                              "auth_time": now}
    if row.nonce:
        claims["nonce"] = row.nonce
    scopes = row.scope.split()
    if "email" in scopes and user.get("email"):
        claims.update(email=user["email"], email_verified=True)
    if "profile" in scopes and user.get("name"):
        claims["name"] = user["name"]
    return {"access_token": random_token(), "token_type": "Bearer", "expires_in": lifetime,
            "scope": row.scope, "id_token": keys.sign(claims)}


def register_demo_client() -> clients.Client | None:
    """Register the app at this provider when VV_STAFF_SSO_* point here, so `make demo`
    with those three variables set needs no other step."""
    config = current_app.config
    if (config.get("STAFF_SSO_ISSUER") or "").rstrip("/") != issuer() \
            or not config.get("STAFF_SSO_CLIENT_ID") or not config.get("STAFF_SSO_CLIENT_SECRET"):
        return None
    return clients.register_client(
        config["STAFF_SSO_CLIENT_ID"],
        redirect_uris=[public_base() + "/sso/callback", public_base() + "/admin/sso/callback"],
        secret=config["STAFF_SSO_CLIENT_SECRET"], name="Virtual Visits staff sign-in")
