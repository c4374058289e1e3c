"""Admin: an endpoint's SMS set-up (admins edit, analysts read) with previews of every
text in each language, and ``/admin/sms``, the last texts sent (never the phone number).

Settings are checked and stored through ``notifications.endpoint_settings`` so the form,
the scheduler and the CLI agree on one shape; Twilio credentials stay in the environment
and are only ever reported as set or not set.
"""
from __future__ import annotations

import logging
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import selectinload
from werkzeug.routing import BuildError

from admin import bp
from admin.auth import current_user, record, require_role
from admin.lookup import endpoint_or_404
from admin.models import AdminRole
from ehr.models import EhrEndpoint
from extensions import db
from notifications import endpoint_settings
from notifications.models import SmsKind
from ops.i18n import LANGUAGES
from visits.models import Appointment, utcnow

log = logging.getLogger(__name__)

CHECKBOXES = ("enabled", "send_confirmation", "send_reschedule", "send_cancellation")
# Fields checked one at a time, so an error is shown next to the field it concerns.
TEXT_FIELDS = ("reminder_offsets_minutes", "quiet_start", "quiet_end", "sender_number")
PREVIEW_KINDS = (SmsKind.CONFIRMATION, SmsKind.RESCHEDULE, SmsKind.REMINDER,
                 SmsKind.CANCELLATION, SmsKind.INVITATION)
OUTBOX_LIMIT = 200


def form_values(settings: endpoint_settings.SmsSettings) -> dict[str, Any]:
    """What the form fields show for stored settings."""
    return {
        **{key: getattr(settings, key) for key in CHECKBOXES},
        "reminder_offsets_minutes": ", ".join(str(m) for m in settings.reminder_offsets_minutes),
        "quiet_start": settings.quiet_start, "quiet_end": settings.quiet_end,
        "sender_number": settings.sender_number or "",
    }


def read_form(form) -> dict[str, Any]:
    """The submitted form as the settings JSON shape (unchecked boxes are absent)."""
    data: dict[str, Any] = {key: key in form for key in CHECKBOXES}
    for key in TEXT_FIELDS:
        data[key] = (form.get(key) or "").strip()
    data["sender_number"] = data["sender_number"] or None
    return data


def field_errors(data: dict[str, Any]) -> dict[str, str]:
    """InvalidSmsSettings messages per field (empty when everything parses)."""
    errors = {}
    for key in TEXT_FIELDS:
        try:
            endpoint_settings.parse({key: data.get(key)})
        except endpoint_settings.InvalidSmsSettings as exc:
            errors[key] = str(exc)
    return errors


def save_settings(endpoint: EhrEndpoint, data: dict[str, Any]) -> list[str]:
    """Check and store ``data`` for ``endpoint`` with an audit entry; returns the changed
    field names. Raises InvalidSmsSettings. Keys other features keep there survive."""
    settings = endpoint_settings.parse(data)
    before = endpoint_settings.for_endpoint(endpoint).to_json()
    after = settings.to_json()
    stored = dict(endpoint.sms_settings or {})
    stored.update(after)
    endpoint.sms_settings = stored
    changed = [key for key in after if before.get(key) != after[key]]
    record("sms_settings.update", target=f"endpoint:{endpoint.name}",
           details={"changed": changed})
    db.session.commit()
    return changed


def sender_status() -> dict[str, Any]:
    """Which sender is in use and whether its credentials are set (never their values)."""
    config = current_app.config
    return {
        "sender": config.get("SMS_SENDER", "outbox"),
        "sid_set": bool(config.get("TWILIO_ACCOUNT_SID")),
        "token_set": bool(config.get("TWILIO_AUTH_TOKEN")),
        "from_number": config.get("TWILIO_FROM_NUMBER") or "",
    }


def example_link() -> str:
    """A join link's shape with a token that opens nothing."""
    base = current_app.config["PUBLIC_BASE_URL"]
    try:
        return base + url_for("patient_join.link", token="EXAMPLE-not-a-real-link")
    except BuildError:
        return base + "/j/EXAMPLE-not-a-real-link"


def previews(endpoint: EhrEndpoint, now: datetime) -> tuple[list[dict[str, Any]], str | None]:
    """Every kind of text in every language for an example visit tomorrow at 09:30 in the
    endpoint's time zone; (previews, None) or ([], why not)."""
    try:
        from notifications import texts
    except ImportError:
        return [], _("Previews are not available: the texts module is not installed.")
    zone = ZoneInfo(endpoint.site_timezone or "UTC")
    day = (now.astimezone(zone) + timedelta(days=1)).date()
    start = datetime.combine(day, time(9, 30), tzinfo=zone)
    # Transient, never added to the session: only what the text needs to render.
    example = Appointment(start_at=start, end_at=start + timedelta(minutes=30),
                          timezone=endpoint.site_timezone, department_display=None)
    link = example_link()
    kinds = []
    for kind in PREVIEW_KINDS:
        rendered = []
        for code, label in LANGUAGES.items():
            try:
                body = texts.render(kind, code, example, link)
            except Exception:  # a preview must never break the settings page
                log.exception("sms preview failed", extra={"kind": str(kind)})
                body = _("(this text could not be rendered)")
            rendered.append({"code": code, "label": label, "body": body})
        kinds.append({"kind": str(kind), "texts": rendered})
    return kinds, None


KIND_LABELS = {
    "confirmation": _l("Confirmation (visit booked)"),
    "reschedule": _l("Reschedule (visit moved)"),
    "reminder": _l("Reminder"),
    "cancellation": _l("Cancellation"),
    "invitation": _l("Invitation (a provider texts a guest)"),
}


@bp.route("/endpoints/<name>/sms", methods=["GET", "POST"])
@require_role()
def sms_settings(name):
    """GET: the SMS set-up and previews; POST (admins): save it."""
    endpoint = endpoint_or_404(name)
    user = current_user()
    can_edit = user.role == AdminRole.ADMIN
    errors: dict[str, str] = {}
    general_error = None
    values = form_values(endpoint_settings.for_endpoint(endpoint))
    status = 200
    if request.method == "POST":
        if not can_edit:
            abort(403)
        data = read_form(request.form)
        errors = field_errors(data)
        if not errors:
            try:
                save_settings(endpoint, data)
            except endpoint_settings.InvalidSmsSettings as exc:
                general_error = str(exc)
            else:
                flash(_("SMS set-up saved."))
                return redirect(url_for("admin.sms_settings", name=name), code=303)
        values = {**data, "sender_number": data["sender_number"] or ""}
        status = 400
    kinds, preview_error = previews(endpoint, utcnow())
    return render_template(
        "admin/sms_settings.html", endpoint=endpoint, values=values, errors=errors,
        general_error=general_error, can_edit=can_edit, sender=sender_status(),
        previews=kinds, preview_error=preview_error,
        kind_labels={k: str(v) for k, v in KIND_LABELS.items()}), status


@bp.route("/sms")
@require_role()
def sms_outbox():
    """The last texts: when, which endpoint and appointment, kind, language, outcome; the
    body only behind a disclosure (it holds a join link); never the phone number."""
    import at_rest
    from notifications.models import BODY_PURPOSE, SmsMessage

    messages = db.session.execute(
        db.select(SmsMessage)
        .options(selectinload(SmsMessage.appointment).selectinload(Appointment.endpoint))
        .order_by(SmsMessage.created_at.desc(), SmsMessage.id.desc())
        .limit(OUTBOX_LIMIT)).scalars().all()
    rows = []
    for message in messages:
        appointment = message.appointment
        body = None
        if message.body_encrypted:
            try:
                body = at_rest.decrypt(message.body_encrypted, BODY_PURPOSE)
            except Exception:  # a key change makes old bodies unreadable; say so, go on
                body = _("(this text can no longer be read)")
        rows.append({
            "id": message.id,
            "at": message.sent_at or message.scheduled_for,
            "endpoint": appointment.endpoint.name if appointment else None,
            "appointment": (appointment.ehr_appointment_id or appointment.filler_id
                            or appointment.placer_id) if appointment else None,
            "kind": message.kind, "language": message.language, "status": message.status,
            "error": " ".join(part for part in (message.error_code, message.error_message)
                              if part),
            "body": body,
        })
    return render_template("admin/sms_outbox.html", rows=rows, limit=OUTBOX_LIMIT,
                           sender=sender_status())
