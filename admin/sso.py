"""Admins signing in with the organization's OpenID provider, through the staff sign-in
client (``staff_sso.services``, configured by ``VV_STAFF_SSO_*``).

The provider only says who the person is (its ``sub``); whether they may use /admin and
in which role comes from our own ``AdminUser`` rows, linked by ``sso_subject``
(``flask admin create-user NAME --role R --sso-subject SUB``). An unknown subject is
refused and recorded.
"""
from __future__ import annotations

import logging

from flask import current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _

from admin import bp
from admin.auth import UNKNOWN_ACTOR, record, sign_in
from admin.models import AdminUser
from admin.views import safe_next
from extensions import db
from staff_sso import services
from staff_sso.services import SsoConfig, SsoFailed

log = logging.getLogger(__name__)


def _config() -> SsoConfig:
    return SsoConfig.from_mapping(current_app.config)


def _redirect_uri() -> str:
    """Exactly as registered with the provider: from PUBLIC_BASE_URL, never the Host."""
    return current_app.config["PUBLIC_BASE_URL"] + url_for("admin.sso_callback")


def find_linked_user(subject: str) -> AdminUser | None:
    """The enabled admin account linked to this provider subject, if any."""
    user = db.session.execute(
        db.select(AdminUser).filter_by(sso_subject=subject)).scalar_one_or_none()
    return user if user is not None and not user.disabled else None


@bp.get("/sso/login")
def sso_login():
    """Send the browser to the organization's provider; come back to ``next`` after."""
    try:
        step = services.start_login(_config(), redirect_uri=_redirect_uri(),
                                    next_url=safe_next(request.args.get("next")))
    except SsoFailed as failure:
        return _refusal(failure)
    services.remember_pending(session, step.pending)
    return redirect(step.url, code=302)


@bp.get("/sso/callback")
def sso_callback():
    """The provider's answer: sign in the admin account linked to that subject."""
    pending = services.take_pending(session, request.args.get("state"))
    if pending is None:
        return _refusal(SsoFailed("bad_state", 400))
    try:
        identity = services.complete_login(_config(), pending, code=request.args.get("code"),
                                           error=request.args.get("error"),
                                           redirect_uri=_redirect_uri())
    except SsoFailed as failure:
        return _refusal(failure)
    user = find_linked_user(identity.subject)
    if user is None:
        # The subject is the provider's opaque id, not a secret: an administrator needs
        # it to link the account (`flask admin create-user ... --sso-subject`).
        record("login.failed", details={"method": "sso", "reason": "no linked account",
                                        "sso_subject": identity.subject[:120]},
               actor=UNKNOWN_ACTOR)
        db.session.commit()
        log.info("admin SSO sign-in refused: no linked account")
        return render_template("admin/error.html", code=403,
                               title=_("No admin account is linked to this sign-in"),
                               detail=_("Your organization confirmed who you are, but no "
                                        "Virtual Visits admin account is linked to that "
                                        "identity."),
                               advice=_("Ask an administrator to link your account. Give "
                                        "them this identifier: %(subject)s",
                                        subject=identity.subject),
                               show_sign_in=True), 403
    sign_in(user, method="sso")
    return redirect(safe_next(pending.next_url))


def _refusal(failure: SsoFailed):
    """The staff sign-in's explanation of a failed SSO, in the admin layout; recorded."""
    from staff_sso.views import PAGES

    title, message, advice = PAGES[failure.reason]
    values = {"error": failure.detail.get("error", "?")}
    if failure.reason != "not_configured":
        record("login.failed", details={"method": "sso", "reason": failure.reason},
               actor="(sso)")
        db.session.commit()
    return render_template("admin/error.html", code=failure.status, title=str(title) % values,
                           detail=str(message) % values, advice=str(advice) % values,
                           show_sign_in=True), failure.status
