"""The sandbox's staff sign-in provider (OpenID Connect) under ``/sandbox/idp``."""
from __future__ import annotations

from flask import jsonify, redirect, render_template, request

from sandbox_ehr import bp, idp, keys, smart
from sandbox_ehr.errors import AuthorizeRedirectError, AuthorizeRejected, InvalidClient, OAuthError

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


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
    try:
        target = idp.authorize(request.values.to_dict(flat=True))
    except AuthorizeRejected as exc:
        return render_template("sandbox_ehr/authorize_error.html",
                               description=exc.description), 400
    except AuthorizeRedirectError as exc:
        target = smart.error_redirect(exc)
    return redirect(target, code=302)


@bp.post("/idp/token")
def idp_token():
    """Exchange a code for an id_token; OAuth errors are JSON per RFC 6749 5.2."""
    try:
        body = idp.token(request.form.to_dict(flat=True), request.headers.get("Authorization"))
    except OAuthError as exc:
        response = jsonify(error=exc.error, error_description=exc.description)
        response.status_code = exc.status
        response.headers.update(_NO_STORE)
        if isinstance(exc, InvalidClient) and exc.basic:
            response.headers["WWW-Authenticate"] = 'Basic realm="sandbox-idp"'
        return response
    response = jsonify(body)
    response.headers.update(_NO_STORE)
    return response
