"""Today's clinic schedule, read from the sandbox's own FHIR resources."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sandbox_ehr import store


@dataclass(frozen=True)
class ScheduleRow:
    """One appointment as the schedule page shows it."""

    appointment_id: str
    start: datetime  # in clinic time
    patient: str
    practitioner: str
    department: str
    status: str


def today(zone_name: str) -> date:
    return datetime.now(ZoneInfo(zone_name)).date()


def rows_for(day: date, zone_name: str) -> list[ScheduleRow]:
    """Appointments starting on ``day`` in the clinic's time zone, earliest first."""
    zone = ZoneInfo(zone_name)
    rows = []
    for appointment in store.find("Appointment", {"date": [day.isoformat()]}):
        actors = {}
        for participant in appointment.get("participant", []):
            reference = (participant.get("actor") or {}).get("reference", "")
            actors.setdefault(reference.split("/", 1)[0], participant["actor"])
        rows.append(ScheduleRow(
            appointment_id=appointment["id"],
            start=datetime.fromisoformat(appointment["start"]).astimezone(zone),
            patient=_display(actors.get("Patient")),
            practitioner=_display(actors.get("Practitioner")),
            department=(actors.get("Location") or {}).get("display", ""),
            status=appointment.get("status", ""),
        ))
    return rows


def _display(actor: dict[str, Any] | None) -> str:
    """The live name of the referenced person (the display on the reference may be stale)."""
    if not actor:
        return ""
    resource_type, _, resource_id = actor.get("reference", "").partition("/")
    resource = store.read(resource_type, resource_id) if resource_id else None
    for name in (resource or {}).get("name", []):
        if name.get("text"):
            return name["text"]
        return " ".join([*name.get("given", []), name.get("family", "")]).strip()
    return actor.get("display", "")
