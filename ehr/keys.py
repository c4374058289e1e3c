"""Our private_key_jwt signing keys: rotation, the published JWKS, client assertions.

EHRs authenticate us at their token endpoint with a JWT we sign (SMART "confidential
asymmetric" clients) and check it against ``/.well-known/jwks.json``, which they fetch
and cache. So a rotated-out key stays published for a while (``RETIRED_KEY_GRACE`` by
default): an EHR holding an old copy of our JWKS, or an assertion signed a moment before
the rotation, must still verify. Private keys are stored as PEM encrypted at rest
(``at_rest``, purpose "signing-key"): a database dump alone cannot sign as us.
"""
from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

import at_rest
from ehr.models import SigningKey
from extensions import db
from visits.models import utcnow

ALGS = ("RS384", "ES384")
DEFAULT_ALG = "RS384"
# How long a retired key stays in the JWKS before a later rotation deletes it. Longer
# than any EHR's JWKS cache we know of and far longer than an assertion's 5 minutes.
RETIRED_KEY_GRACE = timedelta(hours=24)
# SMART Backend Services: "exp ... no more than five minutes in the future".
ASSERTION_LIFETIME_SECONDS = 300
_PURPOSE = "signing-key"
_RSA_BITS = 3072

# Parsed private keys by kid: decrypting and parsing a PEM on every token request is
# wasted work, and a kid (a thumbprint) always names the same key.
_parsed: dict[str, RSAKey | ECKey] = {}
_parsed_lock = threading.Lock()


@dataclass(frozen=True)
class KeyInfo:
    """A key as listings show it: never the private part."""

    kid: str
    alg: str
    created_at: datetime
    retired_at: datetime | None

    @property
    def state(self) -> str:
        return "active" if self.retired_at is None else "retired"

    def as_dict(self) -> dict[str, Any]:
        return {"kid": self.kid, "alg": self.alg, "state": self.state,
                "created_at": self.created_at.isoformat(),
                "retired_at": self.retired_at.isoformat() if self.retired_at else None}


def rotate(alg: str = DEFAULT_ALG, *, retire_after: timedelta = RETIRED_KEY_GRACE,
           now: datetime | None = None) -> SigningKey:
    """Create a new active key, retire the current one (still published), and delete
    keys retired more than ``retire_after`` ago. Commits."""
    now = now or utcnow()
    new = _new_key(alg, now)
    db.session.execute(
        db.update(SigningKey)
        .where(SigningKey.retired_at.is_(None), SigningKey.kid != new.kid)
        .values(retired_at=now))
    db.session.execute(
        db.delete(SigningKey)
        .where(SigningKey.retired_at.is_not(None), SigningKey.retired_at < now - retire_after))
    db.session.commit()
    return new


def active_key() -> SigningKey:
    """The key we sign with now; created (and committed) on first use so a first launch
    never fails.

    Two processes creating one at the same moment each get their own; both are active
    and published, the newest is used, and the next rotation retires both.
    """
    row = db.session.execute(
        db.select(SigningKey).where(SigningKey.retired_at.is_(None))
        .order_by(SigningKey.created_at.desc(), SigningKey.id.desc()).limit(1)
    ).scalar_one_or_none()
    if row is None:
        row = _new_key(DEFAULT_ALG, utcnow())
        db.session.commit()
    return row


def list_keys() -> list[KeyInfo]:
    """Every key still stored (active and retired-but-published), newest first."""
    rows = db.session.execute(
        db.select(SigningKey).order_by(SigningKey.created_at.desc(), SigningKey.id.desc())
    ).scalars().all()
    return [KeyInfo(r.kid, r.alg, r.created_at, r.retired_at) for r in rows]


def public_jwks() -> dict[str, Any]:
    """The JWKS we publish: public parts of every stored key (active first)."""
    active_key()  # the JWKS must never be empty: an EHR may fetch it before our first launch
    rows = db.session.execute(
        db.select(SigningKey)
        .order_by(SigningKey.retired_at.is_not(None), SigningKey.created_at.desc())
    ).scalars().all()
    return {"keys": [_public_only(row.public_jwk) for row in rows]}


def client_assertion(client_id: str, token_url: str) -> str:
    """A private_key_jwt client assertion for ``token_url``, signed with the active key.

    Claims per SMART App Launch / Backend Services: iss = sub = client_id, aud = the
    token endpoint, exp at most five minutes ahead, and a unique jti (EHRs reject replays).
    """
    row = active_key()
    now = int(utcnow().timestamp())
    header = {"alg": row.alg, "kid": row.kid, "typ": "JWT"}
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "iat": now,
              "exp": now + ASSERTION_LIFETIME_SECONDS, "jti": secrets.token_urlsafe(24)}
    return jwt.encode(header, claims, _private_key(row), algorithms=[row.alg])


def _new_key(alg: str, now: datetime) -> SigningKey:
    if alg not in ALGS:
        raise ValueError(f"alg must be one of {', '.join(ALGS)}")
    if alg.startswith("RS"):
        key: RSAKey | ECKey = RSAKey.generate_key(_RSA_BITS, private=True)
    else:
        key = ECKey.generate_key("P-384", private=True)
    kid = key.thumbprint()  # RFC 7638, SHA-256
    public = dict(key.as_dict(private=False), kid=kid, alg=alg, use="sig")
    pem = key.as_pem(private=True).decode("ascii")
    row = SigningKey(kid=kid, alg=alg, public_jwk=_public_only(public),
                     private_key_encrypted=at_rest.encrypt(pem, _PURPOSE), created_at=now)
    db.session.add(row)
    db.session.flush()
    return row


def _private_key(row: SigningKey) -> RSAKey | ECKey:
    with _parsed_lock:
        key = _parsed.get(row.kid)
    if key is None:
        pem = at_rest.decrypt(row.private_key_encrypted, _PURPOSE)
        key = (RSAKey if row.alg.startswith("RS") else ECKey).import_key(pem)
        with _parsed_lock:
            _parsed[row.kid] = key
    return key


# Members of a JWK that carry private material (RFC 7518 6.2.2, 6.3.2).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


def _public_only(jwk: dict[str, Any]) -> dict[str, Any]:
    """A JWK without private members: belt and braces for what we publish."""
    return {name: value for name, value in jwk.items() if name not in _PRIVATE_MEMBERS}
