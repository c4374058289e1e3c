"""The sandbox's "Patient link (SMS)" action: what a clinic's texting would send, shown
on screen instead, so the demo can walk the patient's path without a phone.

The appointment is made known to the app from the sandbox's own FHIR resource, as an HL7
feed or a launch would, through the EHR endpoint ``flask demo`` registers ("sandbox").
"""
from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_datetime, format_time
from flask import abort, current_app, render_template, url_for
from flask_babel import get_locale

from ehr.services import get_endpoint
from sandbox_ehr import bp, store
from sandbox_ehr.schedule import ScheduleRow, rows_for
from visits.appointments import upsert_from_fhir
from visits.links import create_join_link, default_expiry
from visits.models import ParticipantRole

log = logging.getLogger(__name__)

# The endpoint `flask demo` registers for the sandbox (sandbox_ehr.cli).
SANDBOX_ENDPOINT = "sandbox"


@bp.post("/appointments/<appointment_id>/patient-link")
def patient_link(appointment_id: str):
    """Make sure the app knows the visit, then show a fresh join link for its patient."""
    resource = store.read("Appointment", appointment_id)
    if resource is None:
        abort(404)
    endpoint = get_endpoint(SANDBOX_ENDPOINT)
    if endpoint is None:
        return render_template("sandbox_ehr/patient_link.html", url=None), 409
    appointment = upsert_from_fhir(endpoint, resource)
    patient = next((p for p in appointment.participants if p.role == ParticipantRole.PATIENT),
                   None)
    if patient is None:
        abort(404)
    expires_at = default_expiry(appointment)
    token = create_join_link(patient, expires_at=expires_at)  # commits the visit too
    log.info("sandbox join link issued", extra={"participant_id": patient.id,
                                                 "appointment_id": appointment.id})
    zone = ZoneInfo(current_app.config["SANDBOX_TIMEZONE"])
    locale = str(get_locale() or "en")
    row = _row(resource, zone)
    response = current_app.make_response(render_template(
        "sandbox_ehr/patient_link.html",
        url=current_app.config["PUBLIC_BASE_URL"] + url_for("patient_join.link", token=token),
        row=row,
        when=format_time(row.start, format="short", tzinfo=zone, locale=locale) if row else "",
        expires_label=format_datetime(expires_at, format="short", tzinfo=zone, locale=locale)))
    # The page shows a working link: keep it out of caches and Referer headers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _row(resource: dict, zone: ZoneInfo) -> ScheduleRow | None:
    """This appointment as the schedule shows it (names read live from the sandbox)."""
    day = datetime.fromisoformat(resource["start"]).astimezone(zone).date()
    return next((row for row in rows_for(day, zone.key) if row.appointment_id == resource["id"]),
                None)
