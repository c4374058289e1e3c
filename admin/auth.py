"""Who is signed in to /admin, what their role lets them do, and the guards every admin
request passes: sign-in, idle timeout, CSRF on every form, security headers.

Views use ``@require_role()`` (any signed-in admin user) or
``@require_role(AdminRole.ADMIN)``; ``current_user()`` returns the AdminUser. Forms put
``{{ csrf_token() }}`` in a hidden ``csrf_token`` field (``templates/admin/_csrf.html``).
"""
from __future__ import annotations

import functools
import logging
import time
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import abort, current_app, g, redirect, request, session, url_for
from flask_wtf.csrf import CSRFError, generate_csrf, validate_csrf

from admin import bp
from admin.models import AdminRole, AdminUser
from extensions import db
from visits.models import AuditLog, utcnow

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
# Verified against when the username is unknown, so a wrong name costs as long as a
# wrong password and the timing does not tell which names exist.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
SESSION_KEY = "admin"


class LoginRefused(Exception):
    """Wrong name or password, or a locked account: one message for all, no enumeration."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def record(action: str, target: str = "", details: dict | None = None,
           actor: str | None = None) -> AuditLog:
    """Add an audit entry (who, what, when) for the caller to commit with its change.

    ``action`` is a dotted verb ("endpoint.update", "login.failed"); ``target`` is
    "<type>:<id>" ("endpoint:epic-test"); ``details`` never holds a secret's value.
    ``actor`` defaults to the signed-in admin user."""
    if actor is None:
        user = current_user()
        actor = user.username if user else "-"
    target_type, _, target_id = target.partition(":")
    entry = AuditLog(actor=f"admin:{actor}"[:200], action=f"admin.{action}"[:64],
                     target_type=target_type[:64] or None, target_id=target_id[:64] or None,
                     detail=details or {})
    db.session.add(entry)
    return entry


def check_password(username: str, password: str, now: datetime | None = None) -> AdminUser:
    """The account if the password is right and it is not locked; LoginRefused otherwise.

    Consecutive failures lock the account for a while; the counter resets on success."""
    now = now or utcnow()
    config = current_app.config
    user = db.session.execute(
        db.select(AdminUser).filter_by(username=username.strip())).scalar_one_or_none()
    if user is None or user.password_hash is None or user.disabled:
        try:
            _hasher.verify(_DUMMY_HASH, password or "-")
        except VerificationError:
            pass
        record("login.failed", details={"reason": "unknown or password-less account"},
               actor=(username or "-").strip()[:120] or "-")
        db.session.commit()
        raise LoginRefused()
    if user.locked_until and user.locked_until > now:
        record("login.failed", details={"reason": "locked"}, actor=user.username)
        db.session.commit()
        raise LoginRefused()
    try:
        _hasher.verify(user.password_hash, password or "-")
    except (VerificationError, InvalidHashError):
        user.failed_logins += 1
        details = {"reason": "wrong password"}
        if user.failed_logins >= config["ADMIN_MAX_FAILED_LOGINS"]:
            user.locked_until = now + timedelta(minutes=config["ADMIN_LOCKOUT_MINUTES"])
            user.failed_logins = 0
            details["locked_minutes"] = config["ADMIN_LOCKOUT_MINUTES"]
        record("login.failed", details=details, actor=user.username)
        db.session.commit()
        raise LoginRefused() from None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def sign_in(user: AdminUser, method: str = "password") -> None:
    """Start an admin session for ``user`` (a fresh session: no fixation)."""
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = utcnow()
    record("login", details={"method": method}, actor=user.username)
    db.session.commit()
    session.pop(SESSION_KEY, None)
    session[SESSION_KEY] = {"user_id": user.id, "seen": time.time()}
    session.permanent = False


def sign_out() -> None:
    user = current_user()
    if user is not None:
        record("logout", actor=user.username)
        db.session.commit()
    session.pop(SESSION_KEY, None)


def current_user() -> AdminUser | None:
    """The signed-in admin user of this request, or None."""
    if "admin_user" in g:
        return g.admin_user
    state = session.get(SESSION_KEY)
    user = None
    if state:
        idle = current_app.config["ADMIN_IDLE_MINUTES"] * 60
        if time.time() - float(state.get("seen", 0)) > idle:
            session.pop(SESSION_KEY, None)
            g.admin_timed_out = True
        else:
            user = db.session.get(AdminUser, state.get("user_id"))
            if user is None or user.disabled:
                session.pop(SESSION_KEY, None)
                user = None
            else:
                state["seen"] = time.time()
                session.modified = True
    g.admin_user = user
    return user


def require_role(*roles: AdminRole):
    """Signed-in users only (redirected to sign in); with roles, only those (403)."""
    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = current_user()
            if user is None:
                if request.method == "GET":
                    return redirect(url_for("admin.login", next=request.full_path.rstrip("?"),
                                            expired=1 if g.get("admin_timed_out") else None))
                abort(401)
            if roles and user.role not in roles:
                abort(403)
            return view(*args, **kwargs)
        return wrapped
    return decorate


@bp.app_context_processor
def _admin_template_helpers():
    return {"csrf_token": generate_csrf, "admin_current_user": current_user}


@bp.before_request
def _check_csrf():
    """Every state-changing admin request carries the session's CSRF token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return None
    token = request.form.get("csrf_token") or request.headers.get("X-CSRFToken")
    try:
        validate_csrf(token)
    except CSRFError:
        abort(400, description="This form has expired. Reload the page and try again.")
    except Exception:  # flask_wtf raises ValidationError for missing/invalid tokens
        abort(400, description="This form has expired. Reload the page and try again.")
    return None


@bp.after_request
def _security_headers(response):
    """Admin pages are never framed, cached, or given a referrer."""
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'; object-src 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = "max-age=31536000; includeSubDomains"
    return response
