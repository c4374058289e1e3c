"""Sandbox pages: the clinic schedule and the EHR launch buttons behind it."""
from __future__ import annotations

from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from flask import abort, current_app, redirect, render_template, request
from flask_babel import get_locale, lazy_gettext as _l

from sandbox_ehr import bp, schedule as schedule_service, smart

# Schedule button -> the app endpoint that must exist for the button to work.
FEATURE_ENDPOINTS = {
    "provider_launch": ("provider_launch.launch",),
    "patient_launch": ("patient_join.patient_launch",),
    "patient_link": ("patient_join.link",),
    # The sandbox side (building and signing the SIU message) is not written yet either.
    "hl7": ("ehr.hl7_intake", "sandbox_ehr.send_appointment_message"),
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


from sandbox_ehr import patient_links  # noqa: E402,F401  (registers the patient-link action)
