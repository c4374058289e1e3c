"""The sandbox's staff sign-in provider (OpenID Connect) under ``/sandbox/idp``."""
from __future__ import annotations

from flask import jsonify, request

from sandbox_ehr import bp, idp, keys
from sandbox_ehr.oauth_views import authorize_response, token_response


@bp.get("/idp/.well-known/openid-configuration")
def idp_configuration():
    """OpenID Connect discovery document."""
    return jsonify(idp.configuration())


@bp.get("/idp/jwks.json")
def idp_jwks():
    """Public keys that verify the provider's id_tokens (the sandbox's one key)."""
    return jsonify(keys.public_jwks())


@bp.route("/idp/authorize", methods=["GET", "POST"])
def idp_authorize():
    """Auto-approve the demo user: straight back to the app with a code."""
    return authorize_response(idp.authorize, request.values.to_dict(flat=True))


@bp.post("/idp/token")
def idp_token():
    """Exchange a code for an id_token."""
    return token_response(idp.token, "sandbox-idp")
