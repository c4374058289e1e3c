"""SMART Backend Services in the sandbox EHR over real HTTP: client_credentials with
private_key_jwt, system/ scopes, and what a system token may do in the FHIR API.

The app's write-back outbox uses exactly this flow, so write-backs never depend on a
provider's launch token still being alive.
"""
from __future__ import annotations

import uuid

import pytest

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
SYSTEM_SCOPES = "system/AuditEvent.c system/AuditEvent.rs system/Observation.c"


def _backend_token(smart, *, scope: str = SYSTEM_SCOPES, assertion: str | None = None,
                   auth: tuple[str, str] | None = None, **extra: str):
    form = {"grant_type": "client_credentials", "scope": scope, **extra}
    if auth is None:
        form["client_assertion_type"] = ASSERTION_TYPE
        form["client_assertion"] = assertion or smart.assertion()
    return smart.http.post(smart.token_url, data=form, auth=auth)


def _audit_event(identifier: str) -> dict:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110114"},
        "action": "E", "recorded": "2025-01-02T10:00:00Z", "outcome": "0",
        "agent": [{"who": {"reference": "Patient/pat-1"}, "requestor": True}],
        "source": {"observer": {"display": "Virtual Visits"}},
        "entity": [{"what": {"reference": "Appointment/appt-1"}},
                   {"what": {"identifier": {"system": "urn:virtual-visits:event",
                                            "value": identifier}}}],
    }


def test_smart_configuration_advertises_backend_services(live_server, smart):
    config = smart.http.get(f"{smart.fhir_base}/.well-known/smart-configuration").json()

    assert "client_credentials" in config["grant_types_supported"]
    assert "authorization_code" in config["grant_types_supported"]
    assert "client-confidential-asymmetric" in config["capabilities"]
    assert "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    assert {"system/AuditEvent.c", "system/Observation.c"} <= set(config["scopes_supported"])


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_client_credentials_with_private_key_jwt_gets_a_system_token(smart, alg):
    response = _backend_token(smart, assertion=smart.assertion(alg=alg))

    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"].split() == SYSTEM_SCOPES.split()
    assert not {"patient", "encounter", "fhirContext", "id_token", "refresh_token"} & set(body)


def test_only_system_scopes_are_granted(smart):
    response = _backend_token(smart, scope="launch openid user/*.rs patient/*.rs "
                                           "system/AuditEvent.c system/AuditEvent.c")

    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/AuditEvent.c"


@pytest.mark.parametrize("scope", ["", "user/*.rs launch", "system/made up"])
def test_client_credentials_without_a_system_scope_is_invalid_scope(smart, scope):
    response = _backend_token(smart, scope=scope)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_scope"


def test_client_credentials_refuses_a_client_secret(live_server, client_jwks_server):
    from tests.integration.conftest import SmartFlow

    flow = SmartFlow(live_server, client_jwks_server).register(secret="s3cret", jwks=True)

    response = _backend_token(flow, auth=(flow.client_id, "s3cret"))

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": "https://other.example/token"}, "aud"),
    ({"exp": 4102444800}, "far future exp"),
    ({"iss": "someone-else"}, "iss"),
])
def test_client_credentials_checks_the_assertion(smart, claims, reason):
    response = _backend_token(smart, assertion=smart.assertion(**claims))

    assert response.status_code == 401, reason
    assert response.json()["error"] == "invalid_client"


def test_client_credentials_assertion_cannot_be_replayed(smart):
    assertion = smart.assertion()
    assert _backend_token(smart, assertion=assertion).status_code == 200

    response = _backend_token(smart, assertion=assertion)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_system_token_creates_and_searches_audit_events_idempotently(smart):
    token = _backend_token(smart).json()["access_token"]
    identifier = f"bs-{uuid.uuid4().hex}"
    condition = {"If-None-Exist": f"identifier=urn:virtual-visits:event|{identifier}"}

    first = smart.fhir("POST", "AuditEvent", token, json=_audit_event(identifier),
                       headers={**FHIR_JSON, **condition})
    again = smart.fhir("POST", "AuditEvent", token, json=_audit_event(identifier),
                       headers={**FHIR_JSON, **condition})

    assert first.status_code == 201, first.text
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    bundle = smart.fhir("GET", f"AuditEvent?identifier=urn:virtual-visits:event|{identifier}",
                        token).json()
    assert bundle["total"] == 1


def test_system_token_creates_an_observation_for_any_patient(smart):
    token = _backend_token(smart).json()["access_token"]
    observation = {"resourceType": "Observation", "status": "final",
                   "code": {"text": "Video visit device test"},
                   "subject": {"reference": "Patient/pat-2"},
                   "effectiveDateTime": "2025-01-02T10:00:00Z"}

    response = smart.fhir("POST", "Observation", token, json=observation, headers=FHIR_JSON)

    assert response.status_code == 201, response.text


@pytest.mark.parametrize(("method", "path"), [("GET", "Patient/pat-1"),
                                              ("GET", "Observation"),
                                              ("POST", "Communication")])
def test_system_token_is_limited_to_its_scopes(smart, method, path):
    token = _backend_token(smart).json()["access_token"]

    response = smart.fhir(method, path, token, json={"resourceType": "Communication",
                                                     "status": "completed"},
                          headers=FHIR_JSON)

    assert response.status_code == 403
    assert response.json()["resourceType"] == "OperationOutcome"


def test_launch_does_not_grant_system_scopes(smart):
    body = smart.access_token(scope="launch openid user/*.rs system/AuditEvent.c")

    assert "system/AuditEvent.c" not in body["scope"].split()
