"""Sandbox EHR tables, kept on their own database bind.

Every model carries ``__bind_key__ = "sandbox"`` so Flask-SQLAlchemy puts it in a
separate MetaData: the app's Alembic migrations (``db.metadata``) never see these tables,
and seeding (``seed.seed``) creates them with ``db.create_all(bind_key="sandbox")``. Secrets (codes,
tokens, client secrets) are stored only as SHA-256 hashes.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from extensions import db
from sandbox_ehr.common import UTC


class UTCDateTime(TypeDecorator):
    """Aware UTC datetimes in and out; SQLite would otherwise hand back naive values."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class SandboxResource(db.Model):
    """One current version of a FHIR resource (no history: the sandbox keeps the latest)."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_resource"

    type: Mapped[str] = mapped_column(String(64), primary_key=True)
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    last_updated: Mapped[datetime] = mapped_column(UTCDateTime())
    body: Mapped[dict[str, Any]] = mapped_column(JSON)


class SandboxClient(db.Model):
    """A registered SMART client: a JWKS URL (private_key_jwt) and/or a hashed secret."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_client"

    client_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str | None] = mapped_column(String(64))
    jwks_url: Mapped[str | None] = mapped_column(Text)
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)


class SandboxLaunch(db.Model):
    """An EHR launch: the opaque ``launch`` value and the context it stands for."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_launch"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SandboxAuthCode(db.Model):
    """An authorization code, looked up by its hash; single use."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_auth_code"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(200))
    redirect_uri: Mapped[str] = mapped_column(Text)
    code_challenge: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    nonce: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SandboxAccessToken(db.Model):
    """A bearer token, looked up by its hash; remembers its code so reuse can revoke it."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_access_token"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(200))
    code_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(JSON)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SandboxAssertionJti(db.Model):
    """A client assertion id already accepted; a second use is a replay."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_assertion_jti"

    client_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SandboxSigningKey(db.Model):
    """The sandbox's own id_token signing key, made once so its JWKS is stable."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_signing_key"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class SandboxHl7Key(db.Model):
    """The key the sandbox signs its HL7 messages with, and the self-signed certificate
    uploaded to the app for it; the private key is encrypted at rest (at_rest)."""

    __bind_key__ = "sandbox"
    __tablename__ = "sandbox_hl7_key"

    fingerprint_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    private_key_encrypted: Mapped[str] = mapped_column(Text)
    certificate_pem: Mapped[str] = mapped_column(Text)
    not_after: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
