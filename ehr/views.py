"""Public EHR-facing route: our JWKS for client assertions."""
from __future__ import annotations

from flask import jsonify

from ehr import bp, keys

# EHRs cache our JWKS; five minutes keeps a freshly rotated key visible quickly while
# sparing us a fetch per token request. Retired keys stay listed far longer than that.
_JWKS_MAX_AGE_SECONDS = 300


@bp.get("/.well-known/jwks.json")
def jwks():
    """Our public signing keys (active and recently retired) for private_key_jwt."""
    response = jsonify(keys.public_jwks())
    response.headers["Cache-Control"] = f"public, max-age={_JWKS_MAX_AGE_SECONDS}"
    response.headers["Access-Control-Allow-Origin"] = "*"
    return response
