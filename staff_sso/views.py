"""Staff sign-in routes: ``/sso/login?next=/path`` sends the browser to the organization's
provider, ``/sso/callback`` checks its answer, keeps who signed in in the session for
the ``next`` page, and goes there. The work is in ``staff_sso.services``."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import current_app, redirect, render_template, request, session, url_for
from flask_babel import lazy_gettext as _l

from ops import headers
from staff_sso import bp, services

# reason -> (title, what happened, what to do). Staff read these, often inside the EHR.
PAGES = {
    "not_configured": (
        _l("Sign-in with your organization is not set up"),
        _l("Virtual Visits has no organization sign-in provider configured."),
        _l("Tell your IT team: set VV_STAFF_SSO_ISSUER, VV_STAFF_SSO_CLIENT_ID and "
           "VV_STAFF_SSO_CLIENT_SECRET.")),
    "idp_unavailable": (
        _l("Your organization's sign-in did not answer"),
        _l("We could not reach your organization's sign-in service. This is usually brief."),
        _l("Wait a moment and try again. If it keeps happening, tell your IT team.")),
    "idp_misconfigured": (
        _l("Your organization's sign-in settings are incomplete"),
        _l("The sign-in service did not publish the OpenID Connect settings Virtual Visits "
           "needs, or it names another issuer than the one configured."),
        _l("Tell your IT team: VV_STAFF_SSO_ISSUER must be the provider's issuer, whose "
           ".well-known/openid-configuration lists its authorize, token and key addresses.")),
    "bad_state": (
        _l("This sign-in cannot be used"),
        _l("The answer from the sign-in service does not match a sign-in started in this "
           "browser. It may have been used already, or opened in another browser."),
        _l("Start again from where you were (for a video visit, from the EHR).")),
    "login_expired": (
        _l("The sign-in took too long"),
        _l("Too much time passed between starting the sign-in and its answer."),
        _l("Start again from where you were (for a video visit, from the EHR).")),
    "missing_code": (
        _l("The sign-in service's answer is incomplete"),
        _l("The sign-in service sent you back without an authorization code."),
        _l("Try again. If it keeps happening, tell your IT team.")),
    "idp_refused": (
        _l("Your organization did not let you sign in"),
        _l("The sign-in service refused the request (%(error)s). Nothing was linked."),
        _l("Tell your IT team the code above; they can check that Virtual Visits is allowed "
           "for your account.")),
    "token_refused": (
        _l("Your organization did not complete the sign-in"),
        _l("The sign-in service refused to confirm the sign-in (%(error)s). Nothing was "
           "linked."),
        _l("Try again. If it keeps happening, tell your IT team the code above; they can "
           "check our client id and secret.")),
    "id_token_invalid": (
        _l("We could not confirm who you are"),
        _l("The sign-in service's identity token did not pass our checks, so nothing was "
           "linked."),
        _l("Try again. If it keeps happening, tell your IT team: the server log names the "
           "check that failed.")),
}


@bp.after_request
def _no_referrer(response):
    """The callback's URL carries the provider's authorization code: never sent on."""
    return headers.no_referrer(response)


@bp.get("/sso/login")
def login():
    """Start a sign-in with the organization's provider; come back to ``next`` after."""
    try:
        step = services.start_login(services.SsoConfig.from_mapping(current_app.config),
                                    redirect_uri=_redirect_uri(),
                                    next_url=local_path(request.args.get("next")))
    except services.SsoFailed as failure:
        return refusal(failure)
    services.remember_pending(session, step.pending)
    return redirect(step.url, code=302)


@bp.get("/sso/callback")
def callback():
    """The provider's answer: code (or error) and state. The state is single use."""
    pending = services.take_pending(session, request.args.get("state"))
    if pending is None:
        return refusal(services.SsoFailed("bad_state", 400))
    try:
        identity = services.complete_login(
            services.SsoConfig.from_mapping(current_app.config), pending,
            code=request.args.get("code"), error=request.args.get("error"),
            redirect_uri=_redirect_uri())
    except services.SsoFailed as failure:
        return refusal(failure)
    services.remember_identity(session, identity)
    return redirect(pending.next_url, code=302)


def local_path(value: str | None) -> str:
    """``value`` if it is a path on this site, else ``/``: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    parts = urlsplit(value)
    return value if not parts.scheme and not parts.netloc else "/"


def _redirect_uri() -> str:
    """Exactly as registered with the provider: from PUBLIC_BASE_URL, never the Host."""
    return current_app.config["PUBLIC_BASE_URL"] + url_for("staff_sso.callback")


def refusal(failure: services.SsoFailed):
    """The friendly page for a failed sign-in, in the user's language."""
    title, message, advice = PAGES[failure.reason]
    values = {"error": failure.detail.get("error", "?")}
    return render_template("staff_sso/sso_error.html", reason=failure.reason,
                           title=str(title) % values, message=str(message) % values,
                           advice=str(advice) % values), failure.status
