"""The provider's visit page: who is here, who is waiting, admit, end the visit."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from flask import abort, g, render_template, session
from flask_babel import format_date, format_time
from flask_babel import gettext as _

from ehr.errors import EhrError
from ehr.fhir import FhirClient
from ehr.names import display_name
from extensions import db
from ops.payloads import MAX_ID
from provider_launch import bp
from provider_launch.auth import access_token_of, staff_for_visit
from visits import state
from visits.models import Appointment, ParticipantRole

log = logging.getLogger(__name__)


@bp.get(f"/visit/<int(max={MAX_ID}):appointment_id>")
def visit(appointment_id: int):
    """Reached from the launch; the launch session in the cookie proves who this is."""
    launch = staff_for_visit(appointment_id, session.get("launch_sessions") or {})
    if launch is None:
        abort(403)
    appointment = db.session.get(Appointment, appointment_id)
    g.launch_endpoint = appointment.endpoint  # CSP frame-ancestors for the EHR's frame
    now = datetime.now(timezone.utc)
    zone = ZoneInfo(appointment.timezone)
    patient_names = {p.id: _patient_name(launch, p.ehr_user_id)
                     for p in appointment.participants if p.role == ParticipantRole.PATIENT}
    return render_template(
        "provider_launch/visit.html",
        appointment=appointment,
        me=launch.participant,
        starts=_when(appointment.start_at.astimezone(zone)),
        zone_name=appointment.timezone,
        snapshot=state.staff_view(appointment, now),
        patient_names=patient_names,
    )


def _when(local: datetime) -> str:
    """'Thursday, November 26, 2026 · 9:00 AM' in the page's language, clinic time zone."""
    return f"{format_date(local, 'full', rebase=False)} · {format_time(local, 'short', rebase=False)}"


def _patient_name(launch, patient_ref: str | None) -> str:
    """Read live from the EHR with the launch's token; never stored. Falls back to a role
    label when the EHR cannot be reached, so the page still works."""
    token = access_token_of(launch)
    if not patient_ref or not token:
        return _("Patient")
    try:
        resource = FhirClient(launch.endpoint.fhir_base_url, token).read_reference(patient_ref)
    except EhrError:
        log.warning("patient name unavailable", extra={"appointment_id": launch.appointment_id})
        return _("Patient")
    return display_name(resource) or _("Patient")
