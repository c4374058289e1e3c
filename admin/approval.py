"""Approving an endpoint by signing in to it: an analyst proves the EHR, our client id and
our keys work together, and who they are there, before any clinician's launch is trusted.

It is a SMART standalone launch (authorization code, PKCE S256, ``state``, ``nonce``,
``aud`` = the FHIR base, scope ``openid fhirUser``) with our ``private_key_jwt`` client
authentication, built from ``ehr.smart`` and ``ehr.launch`` as the provider launch is.
The EHR's access token is dropped at once: only the validated id_token's ``fhirUser`` is
kept, in ``approved_by`` ("<analyst> as Practitioner/…").

``start`` and ``complete`` take explicit arguments (no request or session); the two routes
at the bottom keep the pending sign-in in the signed session cookie, single use.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, MutableMapping

from flask import current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from admin import bp
from admin.auth import current_user, record, require_role
from admin.models import AdminRole, AdminUser
from ehr import launch as ehr_launch
from ehr import services, smart
from ehr.errors import EhrUnavailable, SmartError
from ehr.models import EhrEndpoint
from extensions import db
from ops import pending as held

log = logging.getLogger(__name__)

PENDING_KEY = "admin_approval_pending"
APPROVAL_SCOPE = "openid fhirUser"
# Approvals begun in this browser and not back yet; more means abandoned attempts.
MAX_PENDING = 3


class ApprovalFailed(Exception):
    """An approval that did not happen; ``reason`` picks the page, ``detail`` its values
    (an endpoint name, an OAuth error code), never a token."""

    def __init__(self, reason: str, status: int = 400, **detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class PendingApproval:
    """The authorize leg's state plus what must not have changed when the EHR answers:
    the analyst who started, and the endpoint's launch-relevant settings."""

    launch: smart.PendingLaunch
    user_id: int
    settings_digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"launch": self.launch.to_dict(), "user_id": self.user_id,
                "settings_digest": self.settings_digest}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PendingApproval:
        return cls(launch=smart.PendingLaunch.from_dict(data.get("launch") or {}),
                   user_id=int(data.get("user_id") or 0),
                   settings_digest=str(data.get("settings_digest") or ""))


def settings_digest(endpoint: EhrEndpoint) -> str:
    """A digest of the settings an approval vouches for: if an admin edits them while the
    analyst is at the EHR, the sign-in approves nothing."""
    values = {name: getattr(endpoint, name) for name in services.LAUNCH_FIELDS}
    values["allowed_frame_ancestors"] = list(values["allowed_frame_ancestors"] or [])
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def start(endpoint: EhrEndpoint, user: AdminUser, *, redirect_uri: str
          ) -> tuple[str, PendingApproval]:
    """Discover the EHR's authorize endpoint and build the standalone sign-in redirect."""
    try:
        config = smart.discover(endpoint.fhir_base_url)
    except EhrUnavailable as exc:
        ehr_launch.log_failure("approval", "ehr_unavailable", endpoint, exc)
        raise ApprovalFailed("ehr_unavailable", 503, name=endpoint.name) from None
    except SmartError as exc:
        ehr_launch.log_failure("approval", "ehr_misconfigured", endpoint, exc)
        raise ApprovalFailed("ehr_misconfigured", 502, name=endpoint.name,
                             iss=endpoint.fhir_base_url) from None
    url, pending = smart.authorization_request(
        config, iss=endpoint.fhir_base_url, launch=None, client_id=endpoint.client_id,
        redirect_uri=redirect_uri, scope=APPROVAL_SCOPE, endpoint_id=endpoint.id)
    return url, PendingApproval(pending, user.id, settings_digest(endpoint))


def complete(pending: PendingApproval, user: AdminUser, *, code: str | None,
             error: str | None, redirect_uri: str) -> EhrEndpoint:
    """Check the EHR's answer and approve the endpoint as "<analyst> as <fhirUser>".

    Nothing changes unless every check passes: same analyst, endpoint settings unchanged,
    in time, a code, the token exchange, a valid id_token naming a fhirUser."""
    endpoint = db.session.get(EhrEndpoint, pending.launch.endpoint_id)
    if endpoint is None:
        raise ApprovalFailed("endpoint_gone", 404)
    name = endpoint.name
    if pending.user_id != user.id:
        raise ApprovalFailed("bad_state", 400, name=name)
    if settings_digest(endpoint) != pending.settings_digest:
        raise ApprovalFailed("endpoint_changed", 409, name=name)
    if pending.launch.is_expired():
        raise ApprovalFailed("expired", 400, name=name)
    if error:
        raise ApprovalFailed("ehr_refused", 400, name=name,
                             error=ehr_launch.safe_error_code(error))
    if not code:
        raise ApprovalFailed("missing_code", 400, name=name)
    try:
        context = ehr_launch.authenticate(endpoint, pending.launch, code=code,
                                          redirect_uri=redirect_uri)
    except ehr_launch.LaunchFailed as failure:
        reason = failure.reason if failure.reason in PAGES else "token_refused"
        raise ApprovalFailed(reason, failure.status,
                             **{**failure.detail, "name": name}) from None
    if not context.fhir_user:
        raise ApprovalFailed("missing_fhir_user", 400, name=name)
    if endpoint.is_approved:
        return endpoint  # approved meanwhile (another analyst): the first approval stands
    approved_by = f"{user.username} as {context.fhir_user}"[:200]
    return services.approve_endpoint(
        name, by=approved_by,
        before_commit=lambda e: record("endpoint.approve", target=f"endpoint:{name}",
                                       details={"approved_by": approved_by,
                                                "fhir_user": context.fhir_user,
                                                "method": "smart-standalone-launch"}))


def hold(store: MutableMapping[str, Any], pending: PendingApproval) -> None:
    """Keep a begun approval under its ``state``, dropping the oldest beyond MAX_PENDING."""
    held.hold(store, PENDING_KEY, pending.launch.state, pending.to_dict(), limit=MAX_PENDING)


def take(store: MutableMapping[str, Any], state: str | None) -> PendingApproval | None:
    """The approval begun with ``state``, removed so it is used once; None if unknown."""
    data = held.take(store, PENDING_KEY, state)
    return PendingApproval.from_dict(data) if data else None


# reason -> (title, what happened, what to do). Read by EHR analysts.
PAGES = {
    "ehr_unavailable": (
        _l("The EHR did not answer"),
        _l("Virtual Visits could not read the SMART configuration of %(name)s. Nothing was "
           "approved."),
        _l("Check the FHIR base URL, that this server can reach the EHR, then try again.")),
    "ehr_misconfigured": (
        _l("The EHR's sign-in settings are incomplete"),
        _l("The EHR at %(iss)s did not publish its SMART authorize, token and key "
           "addresses. Nothing was approved."),
        _l("Its .well-known/smart-configuration must list authorization_endpoint, "
           "token_endpoint and jwks_uri.")),
    "bad_state": (
        _l("This sign-in cannot be used"),
        _l("The EHR's answer does not match an approval started by you in this browser. It "
           "may have been used already. Nothing was approved."),
        _l("Start the approval again from the endpoint's page.")),
    "endpoint_gone": (
        _l("The endpoint no longer exists"),
        _l("The endpoint was removed while you were signing in. Nothing was approved."),
        _l("Go back to the endpoints list.")),
    "endpoint_changed": (
        _l("The endpoint was changed while you were signing in"),
        _l("Someone changed the FHIR base URL, client id, scopes, environment or embedding "
           "origins of %(name)s after you started. Nothing was approved."),
        _l("Check the new settings, then approve again.")),
    "expired": (
        _l("The sign-in took too long"),
        _l("Too much time passed between starting the approval and the EHR's answer. "
           "Nothing was approved."),
        _l("Start the approval again.")),
    "ehr_refused": (
        _l("The EHR refused the sign-in"),
        _l("The EHR answered with the error %(error)s. Nothing was approved."),
        _l("Check that the client id is registered in the EHR with this redirect URI and "
           "the openid and fhirUser scopes.")),
    "missing_code": (
        _l("The EHR's answer is incomplete"),
        _l("The EHR sent you back without an authorization code. Nothing was approved."),
        _l("Start the approval again.")),
    "token_refused": (
        _l("The EHR did not accept Virtual Visits' credentials"),
        _l("The token request was refused (%(error)s). Nothing was approved."),
        _l("Check the client id, and that the EHR has our public keys "
           "(/.well-known/jwks.json) registered for it.")),
    "missing_id_token": (
        _l("The EHR did not say who signed in"),
        _l("The EHR sent no id_token. Nothing was approved."),
        _l("The client must be allowed the openid and fhirUser scopes.")),
    "id_token_invalid": (
        _l("We could not confirm who signed in"),
        _l("The EHR's id_token did not pass our checks. Nothing was approved."),
        _l("The server log names the failed check.")),
    "missing_fhir_user": (
        _l("The EHR did not say who signed in"),
        _l("The id_token has no fhirUser claim. Nothing was approved."),
        _l("The client must be allowed the fhirUser scope, and your EHR user linked to a "
           "Practitioner.")),
}


def _redirect_uri() -> str:
    """Exactly as registered with the EHR: from PUBLIC_BASE_URL, never the Host header."""
    return current_app.config["PUBLIC_BASE_URL"] + url_for("admin.approve_callback")


def _failure_page(failure: ApprovalFailed, endpoint_name: str | None = None):
    log.warning("endpoint approval failed", extra={"reason": failure.reason,
                                                   "endpoint": failure.detail.get("name")})
    title, message, advice = PAGES[failure.reason]
    values = defaultdict(lambda: "?", failure.detail)
    name = failure.detail.get("name") or endpoint_name
    return render_template("admin/approval.html", state="failed", reason=failure.reason,
                           title=str(title), message=str(message) % values,
                           advice=str(advice) % values, endpoint_name=name), failure.status


@bp.route("/endpoints/<name>/approve", methods=["POST"])
@require_role(AdminRole.ANALYST)
def approve(name):
    """Start the analyst's sign-in at the EHR. The form posts here (CSRF-checked); the EHR
    is reached through a link on the next page, because the admin pages' CSP
    (form-action 'self') would block a form's redirect to another site."""
    endpoint = services.get_endpoint(name)
    if endpoint is None:
        return _failure_page(ApprovalFailed("endpoint_gone", 404))
    try:
        url, pending = start(endpoint, current_user(), redirect_uri=_redirect_uri())
    except ApprovalFailed as failure:
        return _failure_page(failure)
    hold(session, pending)
    return render_template("admin/approval.html", state="continue", authorize_url=url,
                           endpoint_name=endpoint.name, ehr_host=endpoint.fhir_base_url)


@bp.route("/endpoints/approve/callback")
@require_role(AdminRole.ANALYST)
def approve_callback():
    """The EHR's answer to the approval sign-in: code (or error) and state, single use."""
    pending = take(session, request.args.get("state"))
    if pending is None:
        return _failure_page(ApprovalFailed("bad_state", 400))
    try:
        endpoint = complete(pending, current_user(), code=request.args.get("code"),
                            error=request.args.get("error"), redirect_uri=_redirect_uri())
    except ApprovalFailed as failure:
        db.session.rollback()
        return _failure_page(failure)
    flash(_("Endpoint %(name)s approved by %(who)s. Visits can now start from this EHR.",
            name=endpoint.name, who=endpoint.approved_by))
    # Redirected, so the code and state leave the address bar and a reload is harmless.
    return redirect(url_for("admin.endpoint", name=endpoint.name), code=303)
