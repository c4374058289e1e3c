"""Admin: add an EHR endpoint, see one, and change its settings.

Everyone signed in reads; only the admin role creates and edits. Every change is audited
with the field names and their new values (none of them is a secret: credentials live in
the environment). The rules are the CLI's (``ehr.services``); this module turns the form
into calls and refusals into messages next to the fields.
"""
from __future__ import annotations

from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _

from admin import bp, forms
from admin.auth import current_user, record, require_role
from admin.lookup import endpoint_or_404
from admin.models import AdminRole
from ehr import services
from ehr.models import EhrEndpoint, Environment
from extensions import db


def _render(form: forms.EndpointForm, endpoint: EhrEndpoint | None, status: int = 200):
    user = current_user()
    return render_template(
        "admin/endpoint.html", form=form, endpoint=endpoint, labels=forms.LABELS,
        can_edit=user is not None and user.role == AdminRole.ADMIN,
        can_approve=user is not None and user.role == AdminRole.ANALYST,
        environments=[e.value for e in Environment], timezones=forms.timezone_choices(),
        regions=forms.region_choices(str(get_locale() or "en")),
        launch_fields=services.LAUNCH_FIELDS), status


def _audit_create(change: services.EndpointChange) -> None:
    record("endpoint.create", target=f"endpoint:{change.endpoint.name}",
           details={"changed": sorted(change.changed), "values": change.changed})


def _audit_update(change: services.EndpointChange, previous_approval: str | None) -> None:
    name = change.endpoint.name
    record("endpoint.update", target=f"endpoint:{name}",
           details={"changed": sorted(change.changed), "values": change.changed,
                    "approval_cleared": change.approval_cleared})
    if change.approval_cleared:
        record("endpoint.approval_cleared", target=f"endpoint:{name}",
               details={"previously_approved_by": previous_approval,
                        "because": sorted(set(change.changed) & set(services.LAUNCH_FIELDS))})


@bp.route("/endpoints/new", methods=["GET", "POST"])
@require_role(AdminRole.ADMIN)
def endpoint_new():
    """Register an EHR; it cannot launch until an analyst approves it."""
    if request.method == "GET":
        return _render(forms.blank(), None)
    form = forms.read(request.form, creating=True)
    if not form.ok:
        return _render(form, None, 400)
    clean = form.clean
    try:
        endpoint = services.add_endpoint(
            clean["name"], clean["fhir_base_url"], client_id=clean["client_id"],
            patient_client_id=clean["patient_client_id"],
            environment=clean["environment"], scopes=clean["scopes"],
            frame_ancestors=clean["allowed_frame_ancestors"],
            site_timezone=clean["site_timezone"],
            require_staff_sso=clean["require_staff_sso"],
            default_phone_region=clean["default_phone_region"],
            link_valid_after_end_minutes=clean["link_valid_after_end_minutes"],
            lobby_opens_before_minutes=clean["lobby_opens_before_minutes"],
            clinic_phone=clean["clinic_phone"],
            before_commit=_audit_create)
    except services.InvalidEndpoint as exc:
        db.session.rollback()
        return _render(forms.refused(form, exc), None, 400)
    flash(_("Endpoint %(name)s added. An analyst must approve it by signing in to the EHR "
            "before visits can start from it.", name=endpoint.name))
    return redirect(url_for("admin.endpoint", name=endpoint.name), code=303)


@bp.route("/endpoints/<name>", methods=["GET", "POST"])
@require_role()
def endpoint(name):
    """One endpoint: its settings (editable by admins), approval, and its other pages."""
    endpoint = endpoint_or_404(name)
    if request.method == "GET":
        return _render(forms.from_endpoint(endpoint), endpoint)
    user = current_user()
    if user.role != AdminRole.ADMIN:
        abort(403)
    form = forms.read(request.form, creating=False)
    form.values["name"] = endpoint.name
    if not form.ok:
        return _render(form, endpoint, 400)
    previous_approval = endpoint.approved_by
    try:
        change = services.update_endpoint(
            endpoint.name, before_commit=lambda c: _audit_update(c, previous_approval),
            **{key: value for key, value in form.clean.items()
               if key in services.EDITABLE_FIELDS})
    except services.InvalidEndpoint as exc:
        db.session.rollback()
        return _render(forms.refused(form, exc), endpoint, 400)
    if not change.changed:
        flash(_("Nothing changed."))
    else:
        flash(_("Saved: %(fields)s.", fields=", ".join(
            str(forms.LABELS[key]) for key in forms.FIELDS if key in change.changed)))
    if change.approval_cleared:
        flash(_("The approval was withdrawn because the FHIR base URL, client id, scopes, "
                "environment or embedding origins changed. Launches are refused until an "
                "analyst approves the endpoint again."))
    return redirect(url_for("admin.endpoint", name=endpoint.name), code=303)


from admin import approval  # noqa: E402,F401  (its routes: approve, approve_callback)
