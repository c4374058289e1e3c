"""The sandbox's own signing key (id_tokens) and the JWKS that publishes it.

The key is made once and kept in the sandbox database, so id_tokens issued before a
restart still verify after it, and an app that cached our JWKS keeps working.
"""
from __future__ import annotations

from typing import Any

from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy.exc import IntegrityError

from extensions import db
from sandbox_ehr.common import utcnow
from sandbox_ehr.models import SandboxSigningKey

ID_TOKEN_ALG = "RS256"


def signing_key() -> RSAKey:
    """The current private key, created on first use."""
    row = db.session.execute(
        db.select(SandboxSigningKey).order_by(SandboxSigningKey.created_at.desc()).limit(1)
    ).scalar_one_or_none()
    if row is None:
        row = _create_key()
    return RSAKey.import_key(row.private_jwk)


def _create_key() -> SandboxSigningKey:
    key = RSAKey.generate_key(2048, private=True)
    kid = key.thumbprint()
    private = dict(key.as_dict(private=True), kid=kid, use="sig", alg=ID_TOKEN_ALG)
    row = SandboxSigningKey(kid=kid, private_jwk=private, created_at=utcnow())
    db.session.add(row)
    try:
        db.session.commit()
    except IntegrityError:  # another process made one first; theirs wins
        db.session.rollback()
        return db.session.execute(db.select(SandboxSigningKey).limit(1)).scalar_one()
    return row


def public_jwks() -> dict[str, Any]:
    """Every key we have signed with, public parts only."""
    rows = db.session.execute(db.select(SandboxSigningKey)).scalars().all()
    if not rows:
        signing_key()
        rows = db.session.execute(db.select(SandboxSigningKey)).scalars().all()
    keys = []
    for row in rows:
        public = RSAKey.import_key(row.private_jwk).as_dict(private=False)
        keys.append(dict(public, kid=row.kid, use="sig", alg=ID_TOKEN_ALG))
    return {"keys": keys}


def sign(claims: dict[str, Any]) -> str:
    """A compact JWS over ``claims`` with our key, ``kid`` in the header for key selection."""
    key = signing_key()
    header = {"alg": ID_TOKEN_ALG, "typ": "JWT", "kid": key.kid}
    return jwt.encode(header, claims, key, algorithms=[ID_TOKEN_ALG])
