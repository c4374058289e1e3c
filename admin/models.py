"""Admin accounts. What they do is recorded in the shared ``audit_log`` (``admin.auth.record``).

Passwords are argon2 hashes (``admin.auth``); an account signed in through the
organization's OpenID provider is matched by ``sso_subject`` and may have no password.
"""
from __future__ import annotations

import enum
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from visits.models import UTCDateTime, one_of, utcnow


class AdminRole(enum.StrEnum):
    # Configures endpoints, certificates and SMS.
    ADMIN = "admin"
    # Approves endpoints by signing in to the EHR; reads everything else.
    ANALYST = "analyst"


class AdminUser(db.Model):
    """Someone who may sign in to /admin."""

    __tablename__ = "admin_users"
    __table_args__ = (one_of("role", AdminRole),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(120), unique=True)
    # argon2id; NULL for an account that only signs in with the organization's SSO.
    password_hash: Mapped[str | None] = mapped_column(sa.String(200))
    role: Mapped[str] = mapped_column(sa.String(16))
    # The OpenID provider's `sub` for this person, once linked.
    sso_subject: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    # Consecutive failed password sign-ins; reaching the limit locks until locked_until.
    failed_logins: Mapped[int] = mapped_column(default=0, server_default="0")
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    disabled: Mapped[bool] = mapped_column(default=False, server_default=sa.false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<AdminUser {self.id} {self.username!r} {self.role}>"
