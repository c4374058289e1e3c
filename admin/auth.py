"""Who is signed in to /admin, what their role lets them do, and the guards every admin
request passes: sign-in, idle timeout, CSRF on every form, security headers.

Views use ``@require_role()`` (any signed-in admin user) or
``@require_role(AdminRole.ADMIN)``; ``current_user()`` returns the AdminUser. Forms put
``{{ csrf_token() }}`` in a hidden ``csrf_token`` field (``templates/admin/_csrf.html``).

The session is Flask's signed cookie: the admin part holds only the user id and when
the user was last seen, and the whole cookie is replaced at sign-in (no fixation).
"""
from __future__ import annotations

import functools
import logging
import time
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import abort, current_app, g, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_wtf.csrf import generate_csrf, validate_csrf
from werkzeug.exceptions import HTTPException

from admin import bp
from admin.models import AdminRole, AdminUser
from extensions import db
from visits.models import AuditLog, utcnow

log = logging.getLogger(__name__)

_hasher = PasswordHasher()
# Verified against when there is no usable account, so a wrong name (or a locked or
# password-less account) costs as long as a wrong password: timing tells nothing.
_DUMMY_HASH = _hasher.hash("not-a-real-password")
SESSION_KEY = "admin"
# Session keys that survive sign-in: only the visitor's language choice.
_KEPT_ON_SIGN_IN = ("lang",)
# Shown in the audit log for a name that matches no account: what was typed may be a
# password pasted into the wrong field, so it is never stored.
UNKNOWN_ACTOR = "(unknown)"
# Audit detail keys whose values are never written or shown, whatever a caller passes.
SECRET_WORDS = ("password", "secret", "token", "private", "hash", "credential", "auth_token")


class LoginRefused(Exception):
    """Wrong name or password, or a locked account: one message for all, no enumeration."""


def clock() -> float:
    """Seconds since the epoch for the idle timeout; one place for tests to see it."""
    return time.time()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def redact(details: dict | None) -> dict:
    """``details`` with the value of any secret-looking key replaced: defence in depth
    for callers that pass a form through."""
    clean: dict = {}
    for key, value in (details or {}).items():
        if any(word in str(key).lower() for word in SECRET_WORDS):
            clean[key] = "[redacted]"
        elif isinstance(value, dict):
            clean[key] = redact(value)
        else:
            clean[key] = value
    return clean


def record(action: str, target: str = "", details: dict | None = None,
           actor: str | None = None) -> AuditLog:
    """Add an audit entry (who, what, when) for the caller to commit with its change.

    ``action`` is a dotted verb ("endpoint.update", "login.failed"); ``target`` is
    "<type>:<id>" ("endpoint:epic-test"); ``details`` never holds a secret's value.
    ``actor`` defaults to the signed-in admin user."""
    if actor is None:
        user = current_user()
        actor = user.username if user else "-"
    target_type, _sep, target_id = target.partition(":")
    entry = AuditLog(actor=f"admin:{actor}"[:200], action=f"admin.{action}"[:64],
                     target_type=target_type[:64] or None, target_id=target_id[:64] or None,
                     detail=redact(details))
    db.session.add(entry)
    return entry


def _verify(password_hash: str | None, password: str) -> bool:
    """argon2 verification that costs the same whether or not there is a hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password or "-") \
            and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def check_password(username: str, password: str, now: datetime | None = None) -> AdminUser:
    """The account if the password is right and it is not locked; LoginRefused otherwise.

    Every path verifies one argon2 hash and writes one audit row, so an unknown name, a
    wrong password and a locked account look and take alike. Consecutive failures lock
    the account for ``ADMIN_LOCKOUT_MINUTES``; the counter resets on success."""
    now = now or utcnow()
    config = current_app.config
    name = (username or "").strip()
    user = db.session.execute(
        db.select(AdminUser).filter_by(username=name)).scalar_one_or_none() if name else None
    usable = user is not None and not user.disabled and user.password_hash is not None
    correct = _verify(user.password_hash if usable else None, password)
    if not usable:
        reason = "unknown account" if user is None else (
            "account disabled" if user.disabled else "account has no password (SSO only)")
        record("login.failed", details={"method": "password", "reason": reason},
               actor=UNKNOWN_ACTOR if user is None else user.username)
        db.session.commit()
        raise LoginRefused()
    if user.locked_until and user.locked_until > now:
        record("login.failed", details={"method": "password", "reason": "locked"},
               actor=user.username)
        db.session.commit()
        raise LoginRefused()
    if not correct:
        user.failed_logins += 1
        details: dict = {"method": "password", "reason": "wrong password",
                         "consecutive_failures": user.failed_logins}
        if user.failed_logins >= config["ADMIN_MAX_FAILED_LOGINS"]:
            user.locked_until = now + timedelta(minutes=config["ADMIN_LOCKOUT_MINUTES"])
            user.failed_logins = 0
            details["locked_minutes"] = config["ADMIN_LOCKOUT_MINUTES"]
            log.warning("admin account locked after failed sign-ins")
        record("login.failed", details=details, actor=user.username)
        db.session.commit()
        raise LoginRefused()
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def sign_in(user: AdminUser, method: str = "password") -> None:
    """Start an admin session for ``user``: the old cookie's contents (and its CSRF
    token) are dropped, so a session planted before sign-in is worth nothing after."""
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = utcnow()
    record("login", details={"method": method}, actor=user.username)
    db.session.commit()
    kept = {key: session[key] for key in _KEPT_ON_SIGN_IN if key in session}
    session.clear()
    session.update(kept)
    session[SESSION_KEY] = {"user_id": user.id, "seen": clock()}
    session.permanent = False
    g.pop("csrf_token", None)  # flask_wtf caches the old token for this request
    g.admin_user = user


def sign_out() -> None:
    """End the admin session (and everything else in this browser's cookie)."""
    user = current_user()
    if user is not None:
        record("logout", actor=user.username)
        db.session.commit()
    kept = {key: session[key] for key in _KEPT_ON_SIGN_IN if key in session}
    session.clear()
    session.update(kept)
    g.admin_user = None


def current_user() -> AdminUser | None:
    """The signed-in admin user of this request, or None (idle too long: signed out)."""
    if "admin_user" in g:
        return g.admin_user
    state = session.get(SESSION_KEY)
    user = None
    if isinstance(state, dict):
        idle = current_app.config["ADMIN_IDLE_MINUTES"] * 60
        now = clock()
        if now - float(state.get("seen", 0)) > idle:
            session.pop(SESSION_KEY, None)
            g.admin_timed_out = True
        else:
            user = db.session.get(AdminUser, state.get("user_id"))
            if user is None or user.disabled:
                session.pop(SESSION_KEY, None)
                user = None
            else:
                state["seen"] = now
                session.modified = True
    g.admin_user = user
    return user


def require_role(*roles: AdminRole):
    """Signed-in users only (GET: redirected to sign in; other methods: 401); with
    roles, only those (403). The roles are kept on the view as ``admin_roles`` so the
    permission tests can enumerate every guarded page."""
    def decorate(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            user = current_user()
            if user is None:
                if request.method in ("GET", "HEAD"):
                    return redirect(url_for("admin.login", next=request.full_path.rstrip("?"),
                                            expired=1 if g.get("admin_timed_out") else None))
                abort(401)
            if roles and user.role not in roles:
                abort(403)
            return view(*args, **kwargs)
        wrapped.admin_roles = tuple(AdminRole(role) for role in roles)
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
    except Exception:  # noqa: BLE001  (flask_wtf raises wtforms' ValidationError)
        log.info("admin form refused: missing or stale CSRF token")
        abort(400, description=_("This form has expired or did not come from this site. "
                                 "Reload the page and try again."))
    return None


# code -> (title, what to do). Shown inside the admin layout.
def _error_text(code: int) -> tuple[str, str]:
    if code == 400:
        return _("The form could not be used"), _("Reload the page and try again.")
    if code == 401:
        return _("You are signed out"), _("Sign in again, then repeat what you were doing.")
    if code == 403:
        return _("Your role cannot do this"), _(
            "Analysts can read every page and approve endpoints; changing the configuration "
            "needs an admin account. Ask an administrator.")
    if code == 404:
        return _("Page not found"), _("Check the address, or go back to the endpoints list.")
    if code == 405:
        return _("Not allowed"), _("This page can't be used that way.")
    if code == 429:
        return _("Too many attempts"), _("Wait a minute, then try again.")
    return _("Something went wrong"), _("Try again in a moment.")


def _admin_error(error: HTTPException):
    """Errors inside /admin keep the admin layout and say what to do next; an error
    raised with its own ``description`` (the CSRF refusal) also says why."""
    code = error.code or 500
    if code >= 500:
        log.error("admin error", extra={"status": code})
    title, advice = _error_text(code)
    custom = error.description != type(error).description and code != 429
    return render_template("admin/error.html", title=title, advice=advice,
                           detail=error.description if custom else None, code=code), code


# By code as well: Flask looks for a handler of the exact code (the app's rate-limit
# handler is one) before it looks for a blueprint's generic one.
bp.register_error_handler(HTTPException, _admin_error)
for _code in (400, 401, 403, 404, 405, 429):
    bp.register_error_handler(_code, _admin_error)


@bp.after_app_request
def _security_headers(response):
    """Admin pages, errors included, are never framed, cached, sniffed or given a
    referrer; scripts and styles only come from this site."""
    if not (request.path == "/admin" or request.path.startswith("/admin/")):
        return response
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
