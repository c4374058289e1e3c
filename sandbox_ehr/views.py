"""Sandbox pages: the clinic schedule and the EHR launch buttons behind it."""
from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_datetime, format_time
from flask import abort, current_app, redirect, render_template, request
from flask_babel import get_locale, gettext as _, lazy_gettext as _l
from markupsafe import Markup, escape

from sandbox_ehr import bp, hl7_sender, schedule as schedule_service, smart, store

# Schedule button -> the app endpoint that must exist for the button to work.
FEATURE_ENDPOINTS = {
    "provider_launch": ("provider_launch.launch",),
    "patient_launch": ("patient_join.patient_launch",),
    "patient_link": ("patient_join.link",),
    "hl7": ("hl7feed.intake", "sandbox_ehr.send_appointment_message"),
    "device_test": ("device_test.device_test",),
}

# FHIR Appointment.status codes -> what the schedule shows.
STATUS_LABELS = {
    "proposed": _l("Proposed"), "pending": _l("Pending"), "booked": _l("Booked"),
    "arrived": _l("Arrived"), "fulfilled": _l("Completed"), "cancelled": _l("Cancelled"),
    "noshow": _l("No-show"), "entered-in-error": _l("Entered in error"),
    "checked-in": _l("Checked in"), "waitlist": _l("Wait list"),
}


@bp.get("")
def schedule():
    """The clinic schedule: today's video visits with EHR-style launch buttons."""
    zone = current_app.config["SANDBOX_TIMEZONE"]
    day = schedule_service.today(zone)
    features = {name: all(e in current_app.view_functions for e in endpoints)
                for name, endpoints in FEATURE_ENDPOINTS.items()}
    locale = str(get_locale() or "en")
    tzinfo = ZoneInfo(zone)
    return render_template(
        "sandbox_ehr/schedule.html", zone=zone, features=features, status_labels=STATUS_LABELS,
        rows=schedule_service.rows_for(day, zone),
        day_label=format_date(day, format="full", locale=locale),
        time_label=lambda moment: format_time(moment, format="short", tzinfo=tzinfo,
                                              locale=locale))


@bp.get("/launch/<audience>/<appointment_id>")
def launch(audience: str, appointment_id: str):
    """Start an EHR launch the way Hyperspace (provider) or MyChart (patient) would."""
    if audience not in smart.AUDIENCES:
        abort(404)
    try:
        result = smart.create_launch(audience, appointment_id, target=request.args.get("target"))
    except smart.UnknownAppointment:
        abort(404)
    return redirect(result.redirect_url, code=302)


# SmsMessage.kind / .status -> what the sandbox's message list shows.
SMS_KIND_LABELS = {
    "confirmation": _l("Confirmation"), "reschedule": _l("Rescheduled"),
    "cancellation": _l("Cancellation"), "reminder": _l("Reminder"),
    "invitation": _l("Invitation"), "test": _l("Test"),
}
SMS_STATUS_LABELS = {
    "scheduled": _l("Scheduled"), "sent": _l("Sent"), "delivered": _l("Delivered"),
    "failed": _l("Failed"), "cancelled": _l("Cancelled"), "suppressed": _l("Not sent"),
}
ACK_LABELS = {
    "AA": _l("AA: accepted"), "AE": _l("AE: error in the message"),
    "AR": _l("AR: rejected"),
}
_URL = re.compile(r"https?://[^\s<>\"']+")


@bp.get("/appointments/<appointment_id>/messages")
def appointment_messages(appointment_id: str):
    """The texts the app queued for this appointment's patient after an HL7 message."""
    return _messages_page(appointment_id, result=None, error=None)


@bp.post("/appointments/<appointment_id>/messages")
def send_appointment_message(appointment_id: str):
    """Send an SIU^S12 for this appointment to the app, as Epic's interface would, then
    show the ACK and the texts it led to (demo only: no CSRF, nothing but the sandbox's
    own data changes hands)."""
    try:
        result = hl7_sender.send_appointment_message(appointment_id)
    except hl7_sender.UnknownAppointment:
        abort(404)
    except hl7_sender.NotSetUp:
        return _messages_page(appointment_id, result=None, status=409, error=_(
            "The app does not know this sandbox or its signing certificate yet. "
            "Run “flask demo” once, then try again."))
    except hl7_sender.SendFailed as exc:
        return _messages_page(appointment_id, result=None, status=502, error=_(
            "The message was not delivered: %(reason)s", reason=str(exc)))
    if result.accepted:
        hl7_sender.run_sending_pass()
    return _messages_page(appointment_id, result=result, error=None)


def _messages_page(appointment_id: str, *, result, error: str | None, status: int = 200):
    resource = store.read("Appointment", appointment_id)
    if resource is None:
        abort(404)
    zone = current_app.config["SANDBOX_TIMEZONE"]
    tzinfo = ZoneInfo(zone)
    locale = str(get_locale() or "en")
    start = datetime.fromisoformat(resource["start"]).astimezone(tzinfo)
    row = next((r for r in schedule_service.rows_for(start.date(), zone)
                if r.appointment_id == appointment_id), None)
    response = current_app.make_response((render_template(
        "sandbox_ehr/appointment_messages.html", appointment_id=appointment_id, row=row,
        result=result, error=error, messages=hl7_sender.messages_for(appointment_id),
        ack_labels=ACK_LABELS, kind_labels=SMS_KIND_LABELS, status_labels=SMS_STATUS_LABELS,
        linkify=linkify, visit_over=_ends_before_now(resource),
        when=format_time(start, format="short", tzinfo=tzinfo, locale=locale),
        moment=lambda value: format_datetime(value, format="short", tzinfo=tzinfo,
                                             locale=locale) if value else ""), status))
    # The texts carry working join links: keep them out of caches and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _ends_before_now(resource: dict) -> bool:
    """True when the sandbox visit is already over: the app plans no texts for it."""
    end = resource.get("end")
    return bool(end) and datetime.fromisoformat(end) <= datetime.now(ZoneInfo("UTC"))


def linkify(text: str) -> Markup:
    """``text`` HTML-escaped, with its http(s) URLs as links (a trailing full stop or
    bracket stays text), as a phone's messaging app shows a text."""
    out, last = [], 0
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(".,;:!?)")
        out.append(escape(text[last:match.start()]))
        out.append(Markup('<a href="{0}" data-testid="sms-link">{0}</a>').format(url))
        last = match.start() + len(url)
    out.append(escape(text[last:]))
    return Markup("").join(out)


from sandbox_ehr import patient_links  # noqa: E402,F401  (registers the patient-link action)
