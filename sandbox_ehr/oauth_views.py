"""SMART discovery, authorize, token and JWKS endpoints of the sandbox EHR."""
from __future__ import annotations

from flask import jsonify, redirect, render_template, request

from sandbox_ehr import bp, clients, keys, scopes, smart
from sandbox_ehr.common import authorize_url, fhir_base, jwks_url, token_url
from sandbox_ehr.errors import (AuthorizeRedirectError, AuthorizeRejected, InvalidClient,
                                OAuthError)

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@bp.get("/fhir/.well-known/smart-configuration")
def smart_configuration():
    """SMART App Launch 2.0 discovery document."""
    return jsonify({
        "issuer": fhir_base(),
        "jwks_uri": jwks_url(),
        "authorization_endpoint": authorize_url(),
        "token_endpoint": token_url(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt", "client_secret_basic"],
        "token_endpoint_auth_signing_alg_values_supported": list(clients.ASSERTION_ALGS),
        "grant_types_supported": list(smart.GRANT_TYPES),
        "scopes_supported": list(scopes.SUPPORTED_EXAMPLES),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": [keys.ID_TOKEN_ALG],
        "capabilities": [
            "launch-ehr", "launch-standalone", "client-confidential-asymmetric", "client-confidential-symmetric",
            "context-ehr-patient", "context-ehr-encounter", "context-banner",
            "sso-openid-connect", "permission-v1", "permission-v2", "permission-patient",
            "permission-user", "authorize-post",
        ],
    })


@bp.get("/oauth/jwks.json")
def jwks():
    """Public keys that verify our id_tokens."""
    return jsonify(keys.public_jwks())


def authorize_response(approve, params):
    """Run an auto-approving authorize step: a page when we must not redirect, otherwise a
    redirect carrying the code or the OAuth error (shared with the staff sign-in provider)."""
    try:
        target = approve(params)
    except AuthorizeRejected as exc:
        return render_template("sandbox_ehr/authorize_error.html",
                               description=exc.description), 400
    except AuthorizeRedirectError as exc:
        target = smart.error_redirect(exc)
    return redirect(target, code=302)


def token_response(exchange, realm: str):
    """Run a token step; OAuth errors are JSON per RFC 6749 5.2, nothing is cached."""
    try:
        body = exchange(request.form.to_dict(flat=True), request.headers.get("Authorization"))
    except OAuthError as exc:
        response = jsonify(error=exc.error, error_description=exc.description)
        response.status_code = exc.status
        response.headers.update(_NO_STORE)
        if isinstance(exc, InvalidClient) and exc.basic:
            response.headers["WWW-Authenticate"] = f'Basic realm="{realm}"'
        return response
    response = jsonify(body)
    response.headers.update(_NO_STORE)
    return response


@bp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize():
    """Auto-approve: no login or consent screen, straight back to the app with a code."""
    return authorize_response(smart.authorize, request.values.to_dict(flat=True))


@bp.post("/oauth/token")
def token():
    """Exchange an authorization code, or client credentials (Backend Services)."""
    return token_response(smart.token, "sandbox-ehr")
