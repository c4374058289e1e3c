"""Small helpers every sandbox module needs: clock, hashing, and the sandbox's own URLs.

URLs come from PUBLIC_BASE_URL, never from the request's Host header: the FHIR base is
the SMART ``iss`` and ``aud``, and must read the same however the server was reached.
"""
from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timezone

from flask import current_app

UTC = timezone.utc


def utcnow() -> datetime:
    """Now, timezone-aware, so comparisons with stored expiries never mix naive values."""
    return datetime.now(UTC)


def sha256_hex(value: str) -> str:
    """Hash for codes, tokens and secrets: we look them up by hash, never store them."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def random_token(nbytes: int = 32) -> str:
    """An unguessable URL-safe value for codes, tokens and launch ids."""
    return secrets.token_urlsafe(nbytes)


def public_base() -> str:
    return current_app.config["PUBLIC_BASE_URL"]


def fhir_base() -> str:
    """The sandbox FHIR base: SMART ``iss``, the required ``aud``, and the id_token issuer."""
    return public_base() + "/sandbox/fhir"


def authorize_url() -> str:
    return public_base() + "/sandbox/oauth/authorize"


def token_url() -> str:
    """The token endpoint; client assertions must name exactly this as their ``aud``."""
    return public_base() + "/sandbox/oauth/token"


def jwks_url() -> str:
    return public_base() + "/sandbox/oauth/jwks.json"


def config_seconds(name: str) -> int:
    """A lifetime setting from app.config (defaults are declared in sandbox_ehr.init_app)."""
    return int(current_app.config[name])
