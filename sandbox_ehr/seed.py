"""Demo data: a small clinic with today's video visits.

Seeding happens only when asked: ``flask sandbox seed``, or ``flask demo`` (which
``make demo`` runs); never when the app is built. Ids are fixed and every write is an
upsert, so seeding again duplicates nothing and moves the appointments to today in the
clinic's time zone. The people are obviously invented, and their phone numbers are in
the 555-01xx range reserved for fiction.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app

from extensions import db
from sandbox_ehr import clients, idp, store

SYSTEM = "urn:virtual-visits:sandbox"
MRN_SYSTEM = f"{SYSTEM}:mrn"
NPI_SYSTEM = "http://hl7.org/fhir/sid/us-npi"
APPOINTMENT_SYSTEM = f"{SYSTEM}:appointment"
ENCOUNTER_SYSTEM = f"{SYSTEM}:csn"
VIDEO_VISIT = {"coding": [{"system": f"{SYSTEM}:visit-type", "code": "video",
                           "display": "Video visit"}], "text": "Video visit"}

PRACTITIONERS = [
    ("prac-1", "Quinn", "Example", "1999999901"),
    ("prac-2", "Robin", "Sampleton", "1999999902"),
    ("prac-3", "Sam", "Fixture", "1999999903"),
]
LOCATIONS = [
    ("dept-fm", "Family Medicine"),
    ("dept-peds", "Pediatrics"),
    ("dept-bh", "Behavioral Health"),
]
# id, given, family, birth date, sex, phone, language (BCP 47), language name
PATIENTS = [
    ("pat-1", "Ada", "Testwell", "1984-03-12", "female", "(312) 555-0101", "en", "English"),
    ("pat-2", "Ben", "Mockley", "1961-11-02", "male", "(312) 555-0102", "es", "Spanish"),
    ("pat-3", "Carla", "Placeholder", "1999-07-21", "female", "(312) 555-0103", "pt-BR",
     "Portuguese (Brazil)"),
    ("pat-4", "Dev", "Fakename", "2016-05-30", "male", "(312) 555-0104", "en", "English"),
    ("pat-5", "Eli", "Samplesson", "1975-01-15", "other", "(312) 555-0105", "es", "Spanish"),
    ("pat-6", "Fay", "Notreal", "1990-09-09", "female", "(312) 555-0106", "en", "English"),
]
# appointment number, patient, practitioner, department, start (clinic time), minutes
APPOINTMENTS = [
    (1, "pat-1", "prac-1", "dept-fm", time(9, 0), 20),
    (2, "pat-2", "prac-1", "dept-fm", time(10, 15), 20),
    (3, "pat-4", "prac-2", "dept-peds", time(11, 30), 30),
    (4, "pat-3", "prac-3", "dept-bh", time(13, 0), 45),
    (5, "pat-5", "prac-2", "dept-fm", time(14, 45), 20),
    (6, "pat-6", "prac-3", "dept-bh", time(16, 30), 30),
]


@dataclass(frozen=True)
class SeedSummary:
    """What seeding produced; ``changed`` counts resources created or updated."""

    day: date
    timezone: str
    practitioners: int
    patients: int
    locations: int
    appointments: int
    encounters: int
    changed: int


def seed() -> SeedSummary:
    """Create the sandbox's tables if missing, upsert the demo clinic for today and
    register this app as a SMART client (and at the staff sign-in provider, when
    VV_STAFF_SSO_* point there) with the current PUBLIC_BASE_URL."""
    db.create_all(bind_key="sandbox")
    zone_name = current_app.config["SANDBOX_TIMEZONE"]
    zone = ZoneInfo(zone_name)
    today = datetime.now(zone).date()
    changed = sum(was_changed for _stored, was_changed in
                  store.upsert_many(_resources(today, zone)))
    db.session.commit()
    clients.register_app_client()
    idp.register_demo_client()
    return SeedSummary(day=today, timezone=zone_name, practitioners=len(PRACTITIONERS),
                       patients=len(PATIENTS), locations=len(LOCATIONS),
                       appointments=len(APPOINTMENTS), encounters=len(APPOINTMENTS),
                       changed=changed)


def _resources(today: date, zone: ZoneInfo) -> list[tuple[str, str, dict[str, Any]]]:
    names = {pid: f"{given} {family}" for pid, given, family, *_ in PATIENTS}
    names.update({pid: f"Dr. {given} {family}" for pid, given, family, _npi in PRACTITIONERS})
    departments = dict(LOCATIONS)
    resources: list[tuple[str, str, dict[str, Any]]] = []
    for pid, given, family, npi in PRACTITIONERS:
        resources.append(("Practitioner", pid, {
            "active": True,
            "identifier": [{"system": NPI_SYSTEM, "value": npi}],
            "name": [{"use": "official", "family": family, "given": [given], "prefix": ["Dr."],
                      "text": names[pid]}],
        }))
    for lid, name in LOCATIONS:
        resources.append(("Location", lid, {
            "status": "active", "name": name,
            "identifier": [{"system": f"{SYSTEM}:department", "value": lid}],
        }))
    for pid, given, family, birth, sex, phone, lang, lang_name in PATIENTS:
        resources.append(("Patient", pid, {
            "active": True,
            "identifier": [{"use": "usual", "system": MRN_SYSTEM,
                            "value": f"MRN{pid.split('-')[1].zfill(6)}"}],
            "name": [{"use": "official", "family": family, "given": [given],
                      "text": names[pid]}],
            "telecom": [{"system": "phone", "value": phone, "use": "mobile"}],
            "gender": sex, "birthDate": birth,
            "communication": [{"preferred": True, "language": {
                "coding": [{"system": "urn:ietf:bcp:47", "code": lang, "display": lang_name}],
                "text": lang_name}}],
        }))
    for number, pid, prid, lid, start_time, minutes in APPOINTMENTS:
        start = datetime.combine(today, start_time, tzinfo=zone)
        if number == 1:
            start = _first_visit_start(today, zone, start)
        end = start + timedelta(minutes=minutes)
        aid, eid = f"appt-{number}", f"enc-{number}"
        location = {"reference": f"Location/{lid}", "display": departments[lid]}
        resources.append(("Appointment", aid, {
            "identifier": [{"system": APPOINTMENT_SYSTEM, "value": f"A{1000 + number}"}],
            "status": "booked",
            "serviceType": [VIDEO_VISIT], "appointmentType": VIDEO_VISIT,
            "description": "Video visit",
            "start": start.isoformat(), "end": end.isoformat(), "minutesDuration": minutes,
            "participant": [
                {"actor": {"reference": f"Patient/{pid}", "display": names[pid]},
                 "required": "required", "status": "accepted"},
                {"actor": {"reference": f"Practitioner/{prid}", "display": names[prid]},
                 "required": "required", "status": "accepted"},
                {"actor": location, "required": "information-only", "status": "accepted"},
            ],
        }))
        resources.append(("Encounter", eid, {
            "identifier": [{"system": ENCOUNTER_SYSTEM, "value": f"CSN{900000 + number}"}],
            "status": "planned",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": "VR", "display": "virtual"},
            "serviceType": VIDEO_VISIT,
            "subject": {"reference": f"Patient/{pid}", "display": names[pid]},
            "participant": [{"individual": {"reference": f"Practitioner/{prid}",
                                            "display": names[prid]}}],
            "appointment": [{"reference": f"Appointment/{aid}"}],
            "period": {"start": start.isoformat(), "end": end.isoformat()},
            "location": [{"location": location}],
            "serviceProvider": {"display": "Sandbox Community Clinic"},
        }))
    return resources


def _first_visit_start(today: date, zone: ZoneInfo, default: datetime) -> datetime:
    """VV_SANDBOX_FIRST_VISIT: "now" (floored to 5 minutes) or an HH:MM clinic time."""
    setting = str(current_app.config.get("SANDBOX_FIRST_VISIT") or "").strip().lower()
    if setting == "now":
        now = datetime.now(zone).replace(second=0, microsecond=0)
        return now - timedelta(minutes=now.minute % 5)
    try:
        hour, minute = (int(part) for part in setting.split(":"))
        return datetime.combine(today, time(hour, minute), tzinfo=zone)
    except ValueError:
        return default
