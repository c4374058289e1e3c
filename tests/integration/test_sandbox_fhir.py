"""The sandbox EHR's FHIR R4 REST API over real HTTP, with real SMART access tokens."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
OBSERVATION = {
    "resourceType": "Observation",
    "identifier": [{"system": "urn:virtual-visits:device-test", "value": "dt-1"}],
    "status": "final",
    "code": {"text": "Video visit device test"},
    "subject": {"reference": "Patient/pat-1"},
    "focus": [{"reference": "Appointment/appt-1"}],
    "effectiveDateTime": "2025-01-02T10:00:00Z",
}


@pytest.fixture
def token(smart) -> str:
    return smart.access_token()["access_token"]


def _outcome(response) -> dict:
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["severity"] == "error"
    return body["issue"][0]


def _ids(bundle: dict) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle.get("entry", [])]


@pytest.mark.parametrize("path", ["Patient/pat-1", "Practitioner/prac-1", "Appointment/appt-1",
                                  "Encounter/enc-1", "Location/dept-fm"])
def test_read_returns_the_resource(smart, token, path):
    response = smart.fhir("GET", path, token)

    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    body = response.json()
    assert f"{body['resourceType']}/{body['id']}" == path
    assert response.headers["ETag"] == f'W/"{body["meta"]["versionId"]}"'


def test_read_of_a_missing_resource_is_404_outcome(smart, token):
    response = smart.fhir("GET", "Patient/nobody", token)

    assert response.status_code == 404
    assert _outcome(response)["code"] == "not-found"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic abc"])
def test_fhir_without_a_valid_token_is_401(smart, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = smart.fhir("GET", "Patient/pat-1", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    _outcome(response)


def test_expired_token_is_401(smart, token):
    from extensions import db
    from sandbox_ehr.common import sha256_hex, utcnow
    from sandbox_ehr.models import SandboxAccessToken

    with smart.server.app.app_context():
        db.session.get(SandboxAccessToken, sha256_hex(token)).expires_at = \
            utcnow() - timedelta(seconds=1)
        db.session.commit()

    response = smart.fhir("GET", "Patient/pat-1", token)

    assert response.status_code == 401


def test_search_returns_a_searchset_bundle_with_total_and_full_urls(smart, token):
    response = smart.fhir("GET", "Patient", token)

    bundle = response.json()
    assert response.status_code == 200
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 6
    assert bundle["entry"][0]["fullUrl"] == f"{smart.fhir_base}/Patient/pat-1"


@pytest.mark.parametrize(("query", "expected"), [
    ("Patient?_id=pat-2,pat-3", ["pat-2", "pat-3"]),
    ("Patient?identifier=urn:virtual-visits:sandbox:mrn|MRN000004", ["pat-4"]),
    ("Patient?identifier=MRN000004", ["pat-4"]),
    ("Patient?identifier=urn:other|MRN000004", []),
    ("Patient?family=testw", ["pat-1"]),
    ("Practitioner?identifier=http://hl7.org/fhir/sid/us-npi|1999999902", ["prac-2"]),
    ("Appointment?patient=Patient/pat-3", ["appt-4"]),
    ("Appointment?patient=pat-3", ["appt-4"]),
    ("Appointment?practitioner=prac-1", ["appt-1", "appt-2"]),
    ("Appointment?actor=Practitioner/prac-3", ["appt-4", "appt-6"]),
    ("Appointment?identifier=A1005", ["appt-5"]),
    ("Encounter?appointment=Appointment/appt-2", ["enc-2"]),
    ("Encounter?patient=pat-6", ["enc-6"]),
    ("Encounter?subject=Patient/pat-6&practitioner=Practitioner/prac-3", ["enc-6"]),
    ("Encounter?subject=Patient/pat-6&practitioner=Practitioner/prac-1", []),
])
def test_search_parameters(smart, token, query, expected):
    response = smart.fhir("GET", query, token)

    assert response.status_code == 200, response.text
    assert _ids(response.json()) == expected
    assert response.json()["total"] == len(expected)


def test_search_by_absolute_reference_on_our_base(smart, token):
    response = smart.fhir("GET", "Appointment", token,
                          params={"patient": f"{smart.fhir_base}/Patient/pat-1"})

    assert _ids(response.json()) == ["appt-1"]


def test_appointment_date_search_uses_clinic_days_and_prefixes(smart, token):
    zone = ZoneInfo(smart.server.app.config["SANDBOX_TIMEZONE"])
    today = datetime.now(zone).date()
    noon = datetime.combine(today, datetime.min.time(), tzinfo=zone).replace(hour=12)

    def ids(*dates: str) -> list[str]:
        return _ids(smart.fhir("GET", "Appointment", token, params={"date": list(dates)}).json())

    assert len(ids(today.isoformat())) == 6
    assert ids((today + timedelta(days=1)).isoformat()) == []
    assert ids(f"ge{noon.isoformat()}") == ["appt-4", "appt-5", "appt-6"]
    assert ids(f"le{noon.isoformat()}") == ["appt-1", "appt-2", "appt-3"]
    assert ids(f"ge{today.isoformat()}", f"lt{noon.isoformat()}") == ["appt-1", "appt-2",
                                                                       "appt-3"]
    assert ids(f"le{(today - timedelta(days=1)).isoformat()}") == []


def test_search_count_pages_with_a_next_link(smart, token):
    bundle = smart.fhir("GET", "Appointment", token, params={"_count": "4"}).json()

    assert bundle["total"] == 6
    assert len(bundle["entry"]) == 4
    next_url = next(link["url"] for link in bundle["link"] if link["relation"] == "next")
    second = smart.http.get(next_url, headers={"Authorization": f"Bearer {token}"}).json()
    assert _ids(second) == ["appt-5", "appt-6"]


@pytest.mark.parametrize("params", [{"identifier:of-type": "x"}, {"date": "2024-13-45"},
                                    {"date": "ge-yesterday"}, {"date": "xx2024-01-01"},
                                    {"_count": "many"}])
def test_bad_search_parameters_are_400(smart, token, params):
    response = smart.fhir("GET", "Appointment", token, params=params)

    assert response.status_code == 400
    _outcome(response)


def test_unknown_resource_type_is_404_outcome(smart, token):
    response = smart.fhir("GET", "MedicationRequest", token)

    assert response.status_code == 404
    _outcome(response)


@pytest.mark.parametrize(("method", "path"), [("PUT", "Patient/pat-1"), ("DELETE", "Patient/pat-1"),
                                               ("POST", "Patient"), ("PATCH", "Observation/x")])
def test_unsupported_method_is_405_outcome(smart, token, method, path):
    response = smart.fhir(method, path, token, json={})

    assert response.status_code == 405
    assert "Allow" in response.headers
    _outcome(response)


@pytest.mark.parametrize("resource", [
    OBSERVATION,
    {"resourceType": "AuditEvent",
     "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
     "action": "E", "recorded": "2025-01-02T10:00:00Z", "outcome": "0",
     "agent": [{"who": {"reference": "Practitioner/prac-1"}, "requestor": True}],
     "source": {"observer": {"display": "Virtual Visits"}},
     "entity": [{"what": {"reference": "Appointment/appt-1"}}]},
    {"resourceType": "Communication", "status": "completed",
     "subject": {"reference": "Patient/pat-1"},
     "payload": [{"contentString": "Your video visit is ready."}]},
], ids=["Observation", "AuditEvent", "Communication"])
def test_create_stores_the_resource_and_answers_201_with_location(smart, token, resource):
    kind = resource["resourceType"]

    response = smart.fhir("POST", kind, token, data=json.dumps(resource), headers=FHIR_JSON)

    assert response.status_code == 201, response.text
    created = response.json()
    assert created["meta"]["versionId"] == "1"
    assert response.headers["Location"] == \
        f"{smart.fhir_base}/{kind}/{created['id']}/_history/1"
    assert smart.fhir("GET", f"{kind}/{created['id']}", token).json()["id"] == created["id"]


def test_create_ignores_a_client_supplied_id(smart, token):
    response = smart.fhir("POST", "Observation", token, headers=FHIR_JSON,
                          data=json.dumps({**OBSERVATION, "id": "chosen-by-client"}))

    assert response.status_code == 201
    assert response.json()["id"] != "chosen-by-client"


@pytest.mark.parametrize(("body", "code", "mentions"), [
    ("{not json", "structure", "JSON"),
    ("[1, 2]", "structure", "object"),
    (json.dumps({**OBSERVATION, "status": 5}), "structure", "status"),
    (json.dumps({k: v for k, v in OBSERVATION.items() if k != "status"}), "required", "status"),
    (json.dumps({k: v for k, v in OBSERVATION.items() if k != "code"}), "required", "code"),
    (json.dumps({**OBSERVATION, "resourceType": "Patient"}), "invalid", "resourceType"),
    (json.dumps({k: v for k, v in OBSERVATION.items() if k != "resourceType"}), "required",
     "resourceType"),
    (json.dumps({**OBSERVATION, "colour": "blue"}), "structure", "colour"),
    (json.dumps({**OBSERVATION, "effectiveDateTime": "yesterday"}), "invalid",
     "effectiveDateTime"),
], ids=["bad-json", "not-an-object", "wrong-type", "no-status", "no-code", "wrong-resource-type",
        "no-resource-type", "unknown-element", "bad-date"])
def test_invalid_resources_are_rejected_with_an_outcome(smart, token, body, code, mentions):
    response = smart.fhir("POST", "Observation", token, data=body, headers=FHIR_JSON)

    assert response.status_code == 400
    issue = _outcome(response)
    assert issue["code"] == code
    assert mentions in issue["diagnostics"]


def test_if_none_exist_returns_the_existing_resource_instead_of_a_duplicate(smart, token):
    resource = {**OBSERVATION, "identifier": [{"system": "urn:test", "value": "once-only"}]}
    headers = {**FHIR_JSON, "If-None-Exist": "identifier=urn:test|once-only"}
    first = smart.fhir("POST", "Observation", token, data=json.dumps(resource), headers=headers)

    second = smart.fhir("POST", "Observation", token, data=json.dumps(resource), headers=headers)

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    search = smart.fhir("GET", "Observation", token,
                        params={"identifier": "urn:test|once-only"}).json()
    assert search["total"] == 1


def test_if_none_exist_matches_an_audit_event_by_its_entity_identifier(smart, token):
    event = {"resourceType": "AuditEvent",
             "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110100"},
             "recorded": "2025-01-02T10:00:00Z",
             "agent": [{"who": {"reference": "Practitioner/prac-1"}, "requestor": True}],
             "source": {"observer": {"display": "Virtual Visits"}},
             "entity": [{"what": {"reference": "Appointment/appt-1"}},
                        {"what": {"identifier": {"system": "urn:vv:event", "value": "e-42"}}}]}
    headers = {**FHIR_JSON, "If-None-Exist": "identifier=urn:vv:event|e-42"}

    responses = [smart.fhir("POST", "AuditEvent", token, data=json.dumps(event), headers=headers)
                 for _ in range(2)]

    assert [r.status_code for r in responses] == [201, 200]
    assert responses[0].json()["id"] == responses[1].json()["id"]


def test_if_none_exist_without_a_usable_parameter_is_400(smart, token):
    headers = {**FHIR_JSON, "If-None-Exist": "nonsense=1"}

    response = smart.fhir("POST", "Observation", token, data=json.dumps(OBSERVATION),
                          headers=headers)

    assert response.status_code == 400
    _outcome(response)


def test_create_needs_a_write_scope(smart):
    read_only = smart.access_token(scope="launch user/*.rs")["access_token"]

    response = smart.fhir("POST", "Observation", read_only, data=json.dumps(OBSERVATION),
                          headers=FHIR_JSON)

    assert response.status_code == 403
    assert _outcome(response)["code"] == "forbidden"
