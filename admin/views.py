"""Admin routes: sign-in, sign-out and the home page. Feature pages live in their own
modules; signing in with the organization's provider is ``admin/sso.py``."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from admin import bp
from admin.auth import LoginRefused, check_password, current_user, require_role, sign_in, sign_out
from ehr.models import EhrEndpoint
from extensions import db, limiter
from staff_sso.services import SsoConfig
from visits.models import utcnow

# Sign-in attempts per client address; the per-account lockout stops slow guessing of
# one name, this stops fast guessing across many.
LOGIN_RATE_LIMIT = "20 per minute"


def safe_next(target: str | None) -> str:
    """Only a path inside /admin: never an open redirect to another site."""
    if target and (target == "/admin" or target.startswith("/admin/")) \
            and "\\" not in target and not urlsplit(target).netloc:
        return target
    return url_for("admin.home")


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(LOGIN_RATE_LIMIT, methods=["POST"])
def login():
    """Local sign-in form; one message and one status for every refusal (unknown name,
    wrong password, locked account) so names cannot be guessed."""
    if request.method == "GET" and current_user() is not None:
        return redirect(safe_next(request.args.get("next")))
    error = None
    status = 200
    if request.method == "POST":
        try:
            user = check_password(request.form.get("username", ""),
                                  request.form.get("password", ""))
        except LoginRefused:
            error = _("Wrong username or password, or the account is locked for a while. "
                      "Try again, or ask another administrator.")
            status = 401
        else:
            sign_in(user)
            return redirect(safe_next(request.form.get("next")))
    return render_template("admin/login.html", error=error,
                           next=safe_next(request.values.get("next")),
                           expired=request.args.get("expired"),
                           sso_enabled=SsoConfig.from_mapping(current_app.config).is_configured,
                           ), status


@bp.route("/logout", methods=["POST"])
def logout():
    """Sign out (a form with the CSRF token: a link elsewhere cannot sign anyone out)."""
    sign_out()
    flash(_("You are signed out."))
    return redirect(url_for("admin.login"))


@bp.route("/")
@require_role()
def home():
    """Every endpoint at a glance: environment and approval; a warning when the
    integration has been failing longer than ``REPORTS_HEALTH_ALERT_MINUTES``."""
    from reports.health import current_alerts

    endpoints = db.session.execute(db.select(EhrEndpoint).order_by(EhrEndpoint.name)).scalars()
    minutes = current_app.config["REPORTS_HEALTH_ALERT_MINUTES"]
    return render_template("admin/home.html", endpoints=list(endpoints),
                           health_alerts=current_alerts(utcnow(), minutes),
                           health_minutes=minutes)
