"""SMART EHR launch routes: ``/launch`` (from the EHR), ``/launch/callback`` (from its
authorization server) and ``/launch/signed-in/<key>`` (back from the organization's
sign-in, when the endpoint requires staff single sign-on). The work is in
``provider_launch.services``; these read the request, keep the pending launch in the
signed session cookie (and its state on the server, ``launch_states``), and render
refusals."""
from __future__ import annotations

import logging
from collections import defaultdict
from urllib.parse import urlsplit

from flask import (current_app, g, make_response, redirect, render_template, request, session,
                   url_for)
from flask_babel import lazy_gettext as _l
from werkzeug.routing import BuildError

from ehr import launch as ehr_launch
from ops import headers
from ops.framing import frame_load
from provider_launch import bp, launch_states, services
from provider_launch.auth import hold_launch, remember_launch, take_held
from staff_sso.services import SsoConfig, take_identity

log = logging.getLogger(__name__)

PENDING_KEY = "smart_pending"

# reason -> (title, what happened, what to do). Shown to clinicians inside the EHR:
# say plainly what the EHR did or did not send, and whom to tell.
PAGES = {
    "missing_launch_params": (
        _l("Start the visit from the EHR"),
        _l("This address is missing the %(param)s value the EHR adds when it starts a visit."),
        _l("Open the patient's appointment in the EHR and start the video visit from there. "
           "If that is what you did, tell your EHR analyst that the launch sent no "
           "%(param)s.")),
    "unknown_iss": (
        _l("This EHR is not set up for video visits"),
        _l("Virtual Visits does not know the EHR at %(iss)s, so the visit cannot start. "
           "Nothing was saved."),
        _l("Ask your IT team to register this EHR and approve it with the commands below.")),
    "unapproved_endpoint": (
        _l("This EHR is waiting for approval"),
        _l("The EHR %(name)s is registered but not approved yet, so the visit cannot start. "
           "Nothing was saved."),
        _l("Ask your IT team to approve it with the command below.")),
    "ehr_unavailable": (
        _l("The EHR did not answer"),
        _l("We could not reach the EHR to start the visit. This is usually brief."),
        _l("Wait a moment, then start the visit again from the EHR. If it keeps happening, "
           "tell your IT team.")),
    "ehr_misconfigured": (
        _l("The EHR's sign-in settings are incomplete"),
        _l("The EHR at %(iss)s did not publish the SMART sign-in addresses Virtual Visits "
           "needs (authorize, token and signing keys)."),
        _l("Tell your EHR analyst: its .well-known/smart-configuration must list "
           "authorization_endpoint, token_endpoint and jwks_uri.")),
    "bad_state": (
        _l("This sign-in cannot be used"),
        _l("The answer from the EHR does not match a visit started in this browser. It may "
           "have been used already, or opened in another browser."),
        _l("Start the visit again from the EHR.")),
    "launch_expired": (
        _l("The sign-in took too long"),
        _l("Too much time passed between starting the visit and the EHR's answer."),
        _l("Start the visit again from the EHR.")),
    "missing_code": (
        _l("The EHR's answer is incomplete"),
        _l("The EHR sent you back without an authorization code."),
        _l("Start the visit again. If it keeps happening, tell your EHR analyst.")),
    "ehr_refused": (
        _l("The EHR did not allow the visit to start"),
        _l("The EHR refused the sign-in request (%(error)s). Nothing was saved."),
        _l("Tell your EHR analyst the code above; they can check that Virtual Visits is "
           "allowed for your account and that its client id and scopes are set up.")),
    "token_refused": (
        _l("The EHR did not complete the sign-in"),
        _l("The EHR refused to give Virtual Visits access (%(error)s). Nothing was saved."),
        _l("Start the visit again from the EHR. If it keeps happening, tell your EHR analyst "
           "the code above; they can check that our public keys are registered for our "
           "client id.")),
    "id_token_invalid": (
        _l("We could not confirm who you are"),
        _l("The EHR's identity token did not pass our checks, so nothing was saved."),
        _l("Start the visit again. If it keeps happening, tell your IT team: the server log "
           "names the check that failed.")),
    "missing_id_token": (
        _l("The EHR did not say who you are"),
        _l("The EHR sent no id_token, so Virtual Visits cannot tell which clinician you are."),
        _l("Tell your EHR analyst: Virtual Visits must be granted the openid and fhirUser "
           "scopes.")),
    "missing_fhir_user": (
        _l("The EHR did not say who you are"),
        _l("The EHR's id_token has no fhirUser claim naming your Practitioner record."),
        _l("Tell your EHR analyst: Virtual Visits must be granted the fhirUser scope, and "
           "your EHR user must be linked to a Practitioner.")),
    "not_a_practitioner": (
        _l("This page is for clinicians"),
        _l("The EHR says you are signed in as a %(resource_type)s, not a Practitioner."),
        _l("Patients join from their text message or the patient portal. If you are a "
           "clinician, tell your EHR analyst that your fhirUser must be a Practitioner.")),
    "missing_appointment": (
        _l("The EHR did not say which appointment"),
        _l("The EHR sent neither an Appointment (fhirContext) nor an Encounter linked to "
           "one."),
        _l("Start the visit from the appointment in the schedule. Tell your EHR analyst: the "
           "launch context must include the Appointment, or an Encounter whose appointment "
           "is set.")),
    "appointment_not_found": (
        _l("The appointment was not found"),
        _l("The EHR pointed at %(reference)s but could not return it."),
        _l("Check that the appointment still exists, then start the visit again. If it does, "
           "tell your EHR analyst the reference above.")),
    "appointment_unusable": (
        _l("The appointment is incomplete"),
        _l("The EHR's appointment has no start time, so a visit cannot be set up for it."),
        _l("Tell your EHR analyst: the Appointment must have a start time.")),
    "context_mismatch": (
        _l("The EHR sent conflicting information"),
        _l("The appointment belongs to another patient than the one the EHR opened. "
           "Nothing was saved."),
        _l("Start the visit again from the right patient's appointment. If it keeps "
           "happening, tell your EHR analyst.")),
    "staff_sso_not_configured": (
        _l("Sign-in with your organization is not set up"),
        _l("The EHR %(name)s requires staff to sign in once with your organization's "
           "account, but Virtual Visits has no organization sign-in configured. Nothing was "
           "saved."),
        _l("Tell your IT team: set VV_STAFF_SSO_ISSUER, VV_STAFF_SSO_CLIENT_ID and "
           "VV_STAFF_SSO_CLIENT_SECRET, or turn the requirement off with the command below.")),
    "staff_sso_missing": (
        _l("Your organization sign-in was not completed"),
        _l("Virtual Visits did not receive a sign-in with your organization's account for "
           "this visit. Nothing was saved."),
        _l("Start the visit again from the EHR and finish the sign-in.")),
    "staff_sso_conflict": (
        _l("Your EHR account is linked to someone else"),
        _l("Your EHR account is already linked to a different organization account, so the "
           "visit cannot start. Nothing was saved."),
        _l("Tell your IT team; they can check which account your EHR user is linked to.")),
    "frame_not_allowed": (
        _l("This EHR may not show visits inside its window"),
        _l("The page at %(origin)s opened Virtual Visits inside a frame, but the EHR "
           "%(name)s does not allow that site to embed visits, so your browser would show "
           "an empty frame. Nothing was started."),
        _l("Ask your IT team to add the EHR's web address to the endpoint's \"Origins "
           "allowed to embed visits\" (in the admin portal, or with the first command "
           "below), then approve the endpoint again.")),
    "fhir_refused": (
        _l("The EHR did not let us read the appointment"),
        _l("The EHR refused to let Virtual Visits read the appointment or encounter."),
        _l("Tell your EHR analyst: Virtual Visits must be granted read access to Appointment, "
           "Encounter and Practitioner (for example the user/*.rs scope).")),
}


# frame_not_allowed when the browser did not name the page that holds the frame.
FRAME_UNNAMED = _l("A page of another site opened Virtual Visits inside a frame, but the EHR "
                   "%(name)s allows no other site to embed visits, so your browser would show "
                   "an empty frame. Nothing was started.")
# Not a refusal: the launch can go on, in a window of its own.
COOKIE_BLOCKED = (
    _l("Your browser blocked the sign-in inside the EHR"),
    _l("The EHR shows Virtual Visits inside its own window, and your browser does not let "
       "us keep the sign-in there (it blocks cookies of other sites in frames), so the visit "
       "cannot open in it. Nothing was saved."),
    _l("Open the visit in a new window: the same launch starts again there. To use the "
       "EHR's window instead, your IT team can allow cookies for %(host)s in the browser's "
       "settings."))

# Their URLs carry a launch token, an authorization code or a one-time key.
_TOKEN_IN_URL = frozenset({"provider_launch.launch", "provider_launch.callback",
                           "provider_launch.after_sign_in"})


@bp.after_request
def _frame_ancestors(response):
    """Let the EHR embed our pages: its origins join 'self' in CSP frame-ancestors once a
    view has put the launch's endpoint in ``g.launch_endpoint``. A launch step's URL is
    never sent on as a Referer."""
    if request.endpoint in _TOKEN_IN_URL:
        headers.no_referrer(response)
    endpoint = g.get("launch_endpoint")
    if endpoint is None:
        return response
    existing = response.headers.get("Content-Security-Policy", "").strip().rstrip(";")
    if "frame-ancestors" in existing:  # a view chose its own; keep it
        return response
    sources = " ".join(["'self'", *(endpoint.allowed_frame_ancestors or [])])
    response.headers["Content-Security-Policy"] = "; ".join(
        part for part in (existing, f"frame-ancestors {sources}") if part)
    return response


@bp.get("/launch")
def launch():
    """EHR launch: check the iss, then send the browser to the EHR's authorize endpoint."""
    try:
        step = services.begin_launch(
            request.args.get("iss"), request.args.get("launch"), redirect_uri=_redirect_uri(),
            frame=frame_load(request.headers, current_app.config["PUBLIC_BASE_URL"]))
    except services.LaunchFailed as failure:
        return _refusal(failure)
    g.launch_endpoint = step.endpoint
    ehr_launch.hold_pending(session, PENDING_KEY, step.pending)
    launch_states.keep_state(step.pending.state, endpoint_id=step.endpoint.id,
                             iss=step.pending.iss, launch=request.args["launch"])
    return redirect(step.url, code=302)


@bp.get("/launch/callback")
def callback():
    """The EHR's answer: code (or error) and state. The state is single use."""
    state = request.args.get("state")
    pending = ehr_launch.take_pending(session, PENDING_KEY, state)
    seen = launch_states.take_state(state)
    if pending is None:
        return _lost_launch(seen)
    try:
        g.launch_endpoint = services.launch_endpoint(pending.endpoint_id)
        if pending.is_expired():
            raise services.LaunchFailed("launch_expired", 400)
        if request.args.get("error"):
            raise services.LaunchFailed(
                "ehr_refused", 400, error=services.safe_error_code(request.args["error"]))
        code = request.args.get("code")
        if not code:
            raise services.LaunchFailed("missing_code", 400)
        authenticated = services.authenticate_launch(pending, code=code,
                                                     redirect_uri=_redirect_uri())
        if services.staff_sso_needed(authenticated, SsoConfig.from_mapping(current_app.config)):
            key = hold_launch(session, authenticated.endpoint.id, authenticated.context)
            return redirect(url_for("staff_sso.login",
                                    next=url_for("provider_launch.after_sign_in", key=key)),
                            code=302)
        done = services.finish_launch(authenticated.endpoint, authenticated.context)
    except services.LaunchFailed as failure:
        return _refusal(failure)
    remember_launch(session, done.appointment_id, done.session_id)
    return redirect(_visit_url(done.appointment_id), code=302)


@bp.get("/launch/signed-in/<key>")
def after_sign_in(key: str):
    """Back from the organization's sign-in: link the EHR user, then open the visit."""
    held = take_held(session, key)
    if held is None:
        return _refusal(services.LaunchFailed("bad_state", 400))
    try:
        g.launch_endpoint = endpoint = services.launch_endpoint(held.endpoint_id)
        if held.is_expired():
            raise services.LaunchFailed("launch_expired", 400)
        identity = take_identity(session, not_before=held.created_at)
        if identity is None:
            raise services.LaunchFailed("staff_sso_missing", 400)
        done = services.finish_launch(endpoint, held.context, staff_identity=identity)
    except services.LaunchFailed as failure:
        return _refusal(failure)
    remember_launch(session, done.appointment_id, done.session_id)
    return redirect(_visit_url(done.appointment_id), code=302)


def _lost_launch(seen: launch_states.SeenLaunch | None):
    """The callback's state is not in this browser's cookie. When this server began that
    launch and the browser sent no cookie at all, the browser refused it (a third-party
    cookie in the EHR's frame): offer the launch in a new window, where it is first-party.
    Otherwise the state is unknown, used, expired, or from another browser."""
    if seen is None:
        return _refusal(services.LaunchFailed("bad_state", 400))
    try:
        g.launch_endpoint = services.launch_endpoint(seen.endpoint_id)
    except services.LaunchFailed as failure:
        return _refusal(failure)
    if seen.expired:
        return _refusal(services.LaunchFailed("launch_expired", 400))
    if current_app.config["SESSION_COOKIE_NAME"] in request.cookies:
        return _refusal(services.LaunchFailed("bad_state", 400))
    log.info("provider launch: session cookie blocked in a frame",
             extra={"reason": "cookie_blocked", "endpoint": g.launch_endpoint.name})
    title, message, advice = COOKIE_BLOCKED
    host = urlsplit(current_app.config["PUBLIC_BASE_URL"]).hostname
    response = make_response(render_template(
        "provider_launch/cookie_blocked.html", reason="cookie_blocked", title=title,
        message=message, advice=str(advice) % {"host": host},
        new_window_url=url_for("provider_launch.launch", iss=seen.iss, launch=seen.launch)),
        400)
    response.headers["Cache-Control"] = "no-store"  # its link carries the EHR's launch value
    return response


def _redirect_uri() -> str:
    """Exactly as registered with the EHR: from PUBLIC_BASE_URL, never the Host header."""
    return current_app.config["PUBLIC_BASE_URL"] + url_for("provider_launch.callback")


def _visit_url(appointment_id: int) -> str:
    try:
        return url_for("provider_launch.visit", appointment_id=appointment_id)
    except BuildError:  # TODO: drop once the visit page is always registered (lead's view)
        return f"/visit/{appointment_id}"


def _refusal(failure: services.LaunchFailed):
    if failure.endpoint is not None:
        g.launch_endpoint = failure.endpoint
    title, message, advice = PAGES[failure.reason]
    values = defaultdict(lambda: "?", failure.detail)
    if failure.reason == "frame_not_allowed" and not failure.detail.get("origin"):
        message = FRAME_UNNAMED
    commands = []
    if failure.reason == "unknown_iss":
        commands = [f"flask endpoints add NAME {failure.detail.get('iss')} --client-id CLIENT_ID",
                    "flask endpoints approve NAME --by YOUR_NAME"]
    elif failure.reason == "unapproved_endpoint":
        commands = [f"flask endpoints approve {failure.detail.get('name')} --by YOUR_NAME"]
    elif failure.reason == "staff_sso_not_configured":
        commands = [f"flask endpoints approve {failure.detail.get('name')} --by YOUR_NAME "
                    "--no-require-staff-sso"]
    elif failure.reason == "frame_not_allowed":
        name = failure.detail.get("name")
        origin = failure.detail.get("origin") or "https://EHR-WEB-ADDRESS"
        commands = [f"flask endpoints frame-origins add {name} {origin}",
                    f"flask endpoints approve {name} --by YOUR_NAME"]
    response = make_response(render_template(
        "provider_launch/launch_error.html", reason=failure.reason,
        title=str(title) % values, message=str(message) % values,
        advice=str(advice) % values, commands=commands), failure.status)
    if failure.reason == "frame_not_allowed":
        # Only seen if the refusing site may frame it; a page without a form or button
        # offers nothing to trick a click on (clickjacking), so any site may.
        response.headers["Content-Security-Policy"] = "frame-ancestors *"
    return response
