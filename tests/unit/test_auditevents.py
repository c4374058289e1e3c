"""The AuditEvents we write back: valid FHIR R4, coded per action, and free of PHI."""
from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from ehr import auditevents
from ehr.auditevents import Agent

AT = datetime(2030, 3, 14, 15, 0, 5, 123000, tzinfo=timezone.utc)
PATIENT = Agent(role="patient", reference="Patient/pat-1", participant_id=7)
PROVIDER = Agent(role="provider", reference="Practitioner/prac-2", participant_id=8)


def _build(action: str = "participant-connected", **overrides):
    arguments = dict(identifier=auditevents.business_identifier(action, "presence-1"), at=AT,
                     recorded=AT, appointment_reference="Appointment/appt-1",
                     appointment_local_id=3, encounter_reference="Encounter/enc-1",
                     patient_reference="Patient/pat-1", subject=PATIENT, requestor=None,
                     source_url="https://vv.example.org", source_site="vv.example.org")
    arguments.update(overrides)
    return auditevents.build(action, **arguments)


@pytest.mark.parametrize(("action", "subject", "requestor"), [
    ("participant-connected", PATIENT, None),
    ("participant-disconnected", PROVIDER, None),
    ("participant-admitted", PATIENT, PROVIDER),
    ("visit-ended", None, PROVIDER),
])
def test_every_action_builds_a_valid_r4_audit_event(action, subject, requestor):
    event = _build(action, subject=subject, requestor=requestor)

    AuditEvent.model_validate(event)
    assert event["subtype"][0] == {"system": "urn:virtual-visits:audit-action", "code": action,
                                   "display": auditevents.ACTIONS[action]}
    assert event["type"]["code"] == "video-visit"
    assert (event["action"], event["outcome"]) == ("E", "0")
    assert [a["requestor"] for a in event["agent"]].count(True) == 1


def test_connect_and_disconnect_also_carry_dicom_login_logout():
    connected = _build("participant-connected")
    disconnected = _build("participant-disconnected")

    assert connected["subtype"][1]["code"] == "110122"
    assert disconnected["subtype"][1]["code"] == "110123"


def test_admitted_names_the_admitted_and_the_admitting_provider_as_requestor():
    event = _build("participant-admitted", subject=PATIENT, requestor=PROVIDER)

    agents = {a["who"]["reference"]: a for a in event["agent"]}
    assert agents["Patient/pat-1"]["requestor"] is False
    assert agents["Practitioner/prac-2"]["requestor"] is True
    assert agents["Practitioner/prac-2"]["role"][0]["coding"][0]["code"] == "provider"


def test_entities_are_appointment_encounter_patient_and_the_business_identifier():
    event = _build()

    whats = [e["what"] for e in event["entity"]]
    assert {"reference": "Appointment/appt-1"} in whats
    assert {"reference": "Encounter/enc-1"} in whats
    assert {"reference": "Patient/pat-1"} in whats
    assert {"identifier": {"system": "urn:virtual-visits:event",
                           "value": "participant-connected/presence-1"}} in whats
    assert event["recorded"] == "2030-03-14T15:00:05.123Z"


def test_a_guest_and_an_hl7_only_appointment_are_named_by_our_ids():
    guest = Agent(role="guest", participant_id=12)

    event = _build(subject=guest, appointment_reference=None, encounter_reference=None,
                   patient_reference=None)

    AuditEvent.model_validate(event)
    assert event["agent"][0]["who"] == {"identifier": {"system": "urn:virtual-visits:participant",
                                                       "value": "12"}}
    assert event["entity"][0]["what"] == {"identifier": {
        "system": "urn:virtual-visits:appointment", "value": "3"}}


def test_no_names_or_phone_numbers_reach_the_payload():
    text = json.dumps(_build("participant-admitted", requestor=PROVIDER))

    assert "name" not in text.lower().replace("display", "")
    assert "telecom" not in text and "+1" not in text


def test_if_none_exist_searches_the_business_identifier():
    identifier = auditevents.business_identifier("visit-ended", "ended-4")

    assert auditevents.if_none_exist(identifier) == \
        "identifier=urn:virtual-visits:event|visit-ended/ended-4"


@pytest.mark.parametrize("event_key", ["", "a b", "a|b", "a,b", "x" * 121])
def test_event_keys_that_would_break_a_search_are_refused(event_key):
    with pytest.raises(ValueError):
        auditevents.business_identifier("visit-ended", event_key)


def test_unknown_action_is_refused():
    with pytest.raises(ValueError):
        auditevents.business_identifier("participant-sneezed", "k")


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        _build(at=datetime(2030, 3, 14, 15, 0))


def test_an_event_without_agents_is_refused():
    with pytest.raises(ValueError):
        _build(subject=None, requestor=None)
