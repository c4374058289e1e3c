"""Choosing the patient's visit when the portal names none, and reading a session's pass."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest

from patient_join.services import NoPatientSession, PatientPass, todays_appointment

NOW = datetime(2026, 11, 26, 16, 0, tzinfo=timezone.utc)  # 10:00 in Chicago


@dataclass
class Endpoint:
    site_timezone: str = "America/Chicago"
    link_valid_after_end_minutes: int = 120


class FakeFhir:
    """Answers the one search the choice makes, and records it."""

    def __init__(self, resources: list[dict]) -> None:
        self.resources = resources
        self.searches: list[tuple[str, dict]] = []

    def search(self, resource_type: str, **params: str) -> list[dict]:
        self.searches.append((resource_type, params))
        return self.resources


def appointment(ident: str, start: datetime, *, minutes: int = 30, status: str = "booked",
                kind: str = "Video visit") -> dict:
    return {"resourceType": "Appointment", "id": ident, "status": status,
            "start": start.isoformat(), "end": (start + timedelta(minutes=minutes)).isoformat(),
            "serviceType": [{"text": kind}]}


def test_searches_the_patients_appointments_for_today_in_clinic_time():
    late = datetime(2026, 11, 27, 4, 0, tzinfo=timezone.utc)  # 22:00 on the 26th in Chicago
    client = FakeFhir([])

    todays_appointment(client, "Patient/pat-1", Endpoint(), late)

    assert client.searches == [("Appointment", {"patient": "pat-1", "date": "2026-11-26"})]


def test_prefers_a_video_visit_not_over_and_the_earliest():
    client = FakeFhir([
        appointment("over", NOW - timedelta(hours=4)),
        appointment("office", NOW + timedelta(minutes=10), kind="Office visit"),
        appointment("cancelled", NOW, status="cancelled"),
        appointment("later-video", NOW + timedelta(hours=3)),
        appointment("video", NOW + timedelta(minutes=30)),
    ])

    chosen = todays_appointment(client, "Patient/pat-1", Endpoint(), NOW)

    assert chosen["id"] == "video"


def test_any_visit_type_will_do_when_none_looks_like_video():
    client = FakeFhir([appointment("office", NOW, kind="Office visit")])

    assert todays_appointment(client, "Patient/pat-1", Endpoint(), NOW)["id"] == "office"


def test_nothing_joinable_today_is_none():
    client = FakeFhir([appointment("gone", NOW, status="noshow"),
                       {"resourceType": "Appointment", "id": "no-start"}])

    assert todays_appointment(client, "Patient/pat-1", Endpoint(), NOW) is None


def test_a_pass_survives_the_session_round_trip():
    held = PatientPass(3, 7, NOW, link_id=11)

    assert PatientPass.from_session(held.to_session()) == held


@pytest.mark.parametrize("data", [None, [], {"participant_id": 1},
                                  {"participant_id": True, "appointment_id": 1,
                                   "expires_at": NOW.isoformat()},
                                  {"participant_id": 1, "appointment_id": 1,
                                   "expires_at": "2026-11-26T10:00:00"},  # naive
                                  {"participant_id": 1, "appointment_id": 1,
                                   "expires_at": NOW.isoformat(), "link_id": "9"}])
def test_a_malformed_pass_is_no_pass(data):
    with pytest.raises(NoPatientSession):
        PatientPass.from_session(data)
