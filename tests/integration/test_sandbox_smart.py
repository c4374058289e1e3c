"""The sandbox EHR's SMART App Launch over real HTTP: discovery, launch, authorize, token.

Every rejection a strict EHR makes is checked with the OAuth error it must carry, so
the app's SMART client can rely on the sandbox behaving like production.
"""
from __future__ import annotations

import time
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from extensions import db
from sandbox_ehr.common import sha256_hex, utcnow
from sandbox_ehr.models import SandboxAuthCode, SandboxLaunch


def _query(response: requests.Response) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}


def test_smart_configuration_advertises_endpoints_and_capabilities(live_server):
    response = requests.get(f"{live_server.url}/sandbox/fhir/.well-known/smart-configuration")

    config = response.json()
    assert response.status_code == 200
    assert config["issuer"] == f"{live_server.url}/sandbox/fhir"
    assert config["token_endpoint"] == f"{live_server.url}/sandbox/oauth/token"
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt",
                                                               "client_secret_basic"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {
        "RS384", "ES384", "RS256"}
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["response_types_supported"] == ["code"]
    assert {"launch-ehr", "client-confidential-asymmetric", "client-confidential-symmetric",
            "context-ehr-patient", "context-ehr-encounter", "sso-openid-connect",
            "permission-v2"} <= set(config["capabilities"])
    assert requests.get(config["jwks_uri"]).json()["keys"][0]["kty"] == "RSA"


def test_capability_statement_is_public_and_names_the_oauth_uris(live_server):
    response = requests.get(f"{live_server.url}/sandbox/fhir/metadata")

    statement = response.json()
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/fhir+json")
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    oauth = statement["rest"][0]["security"]["extension"][0]
    assert oauth["url"].endswith("/oauth-uris")
    assert {e["url"]: e["valueUri"] for e in oauth["extension"]} == {
        "authorize": f"{live_server.url}/sandbox/oauth/authorize",
        "token": f"{live_server.url}/sandbox/oauth/token"}


@pytest.mark.parametrize(("audience", "path"), [("provider", "/launch"),
                                                 ("patient", "/patient/launch")])
def test_launch_redirects_to_the_app_with_iss_and_launch(live_server, audience, path):
    response = requests.get(f"{live_server.url}/sandbox/launch/{audience}/appt-2",
                            allow_redirects=False)

    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == live_server.url + path
    query = _query(response)
    assert query["iss"] == f"{live_server.url}/sandbox/fhir"
    with live_server.app.app_context():
        launch = db.session.get(SandboxLaunch, query["launch"])
        assert launch.context["appointment"] == "appt-2"
        assert launch.context["patient"] == "pat-2"
        assert launch.context["encounter"] == "enc-2"


@pytest.mark.parametrize(("target", "allowed"), [
    ("/custom/launch", True),
    ("https://evil.example/launch", False),
    (".evil.example/launch", False),  # prefix trick: base + ".evil.example"
])
def test_launch_target_must_stay_on_the_public_base_url(live_server, target, allowed):
    wanted = live_server.url + target if target.startswith(("/", ".")) else target

    response = requests.get(f"{live_server.url}/sandbox/launch/provider/appt-1",
                            params={"target": wanted}, allow_redirects=False)

    location = response.headers["Location"]
    assert location.startswith(wanted + "?") is allowed
    if not allowed:
        assert location.startswith(live_server.url + "/launch?")


def test_launch_for_an_unknown_appointment_is_404(live_server):
    response = requests.get(f"{live_server.url}/sandbox/launch/provider/nope",
                            allow_redirects=False)

    assert response.status_code == 404


@pytest.mark.parametrize("alg", ["RS384", "ES384", "RS256"])
def test_full_provider_launch_with_private_key_jwt(smart, alg):
    launch = smart.launch("provider", "appt-3")
    code, verifier = smart.code(launch=launch)

    response = smart.token(code, verifier, assertion=smart.assertion(alg=alg))

    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["patient"] == "pat-4"
    assert body["encounter"] == "enc-3"
    assert body["fhirContext"] == [{"reference": "Appointment/appt-3"}]
    assert body["need_patient_banner"] is False
    assert "launch" in body["scope"].split()
    jwks = KeySet.import_key_set(smart.http.get(
        smart.http.get(f"{smart.fhir_base}/.well-known/smart-configuration").json()["jwks_uri"]
    ).json())
    token = jwt.decode(body["id_token"], jwks, algorithms=["RS256"])
    assert token.header["kid"] == jwks.keys[0].kid
    claims = token.claims
    assert claims["iss"] == smart.fhir_base
    assert claims["aud"] == smart.client_id
    assert claims["nonce"] == "nonce-456"
    assert claims["fhirUser"] == f"{smart.fhir_base}/Practitioner/prac-2"
    assert claims["sub"]
    assert claims["iat"] <= time.time() < claims["exp"]
    appointment = smart.fhir("GET", "Appointment/appt-3", body["access_token"])
    assert appointment.status_code == 200
    assert appointment.json()["id"] == "appt-3"


def test_patient_launch_names_the_patient_as_fhir_user(smart):
    launch = smart.launch("patient", "appt-1")

    body = smart.access_token(launch=launch, scope="launch openid fhirUser patient/*.rs")

    claims = jwt.decode(body["id_token"], KeySet.import_key_set(
        smart.http.get(f"{smart.server.url}/sandbox/oauth/jwks.json").json()),
        algorithms=["RS256"]).claims
    assert claims["fhirUser"] == f"{smart.fhir_base}/Patient/pat-1"
    assert body["need_patient_banner"] is True
    assert smart.fhir("GET", "Patient/pat-1", body["access_token"]).status_code == 200
    other = smart.fhir("GET", "Patient/pat-2", body["access_token"])
    assert other.status_code == 403
    assert other.json()["resourceType"] == "OperationOutcome"
    bundle = smart.fhir("GET", "Appointment", body["access_token"]).json()
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["appt-1"]


def test_client_secret_basic_is_accepted(live_server, client_jwks_server):
    from tests.integration.conftest import SmartFlow

    flow = SmartFlow(live_server, client_jwks_server).register(secret="s3cret value", jwks=False)
    code, verifier = flow.code()

    response = flow.token(code, verifier, basic=(flow.client_id, "s3cret value"))

    assert response.status_code == 200, response.text
    assert response.json()["access_token"]


def test_wrong_client_secret_is_invalid_client(live_server, client_jwks_server):
    from tests.integration.conftest import SmartFlow

    flow = SmartFlow(live_server, client_jwks_server).register(secret="right", jwks=False)
    code, verifier = flow.code()

    response = flow.token(code, verifier, basic=(flow.client_id, "wrong"))

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


# --- authorize --------------------------------------------------------------------------

def test_authorize_with_an_unknown_client_shows_an_error_page(smart):
    response = smart.authorize(client_id="no-such-client")

    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "text/html" in response.headers["Content-Type"]


def test_authorize_with_an_unregistered_redirect_uri_does_not_redirect(smart):
    response = smart.authorize(redirect_uri="https://evil.example/callback")

    assert response.status_code == 400
    assert "Location" not in response.headers


@pytest.mark.parametrize(("overrides", "error"), [
    ({"aud": "https://other-ehr.example/fhir"}, "invalid_request"),
    ({"aud": None}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"code_challenge": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"launch": "not-a-launch"}, "invalid_request"),
    ({"scope": "made/up.scope"}, "invalid_scope"),
    ({"scope": "openid user/*.rs"}, "invalid_scope"),
])
def test_authorize_errors_are_redirected_with_state(smart, overrides, error):
    params = {"launch": smart.launch(), **overrides}

    response = smart.authorize(**params)

    assert response.status_code == 302
    assert response.headers["Location"].startswith(smart.redirect_uri + "?")
    query = _query(response)
    assert query["error"] == error
    assert query["state"] == "state-123"
    assert "code" not in query


def test_authorize_rejects_an_expired_launch(smart):
    launch = smart.launch()
    with smart.server.app.app_context():
        db.session.get(SandboxLaunch, launch).expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()

    response = smart.authorize(launch=launch)

    assert _query(response)["error"] == "invalid_request"


def test_authorize_stores_only_a_hash_of_the_code(smart):
    code, _verifier = smart.code()

    with smart.server.app.app_context():
        assert db.session.get(SandboxAuthCode, code) is None
        assert db.session.get(SandboxAuthCode, sha256_hex(code)) is not None


# --- token: the code --------------------------------------------------------------------

def test_wrong_pkce_verifier_is_invalid_grant(smart):
    code, _verifier = smart.code()

    response = smart.token(code, smart.pkce()[0])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_redirect_uri_differing_from_authorize_is_invalid_grant(smart):
    code, verifier = smart.code()

    response = smart.token(code, verifier, redirect_uri=smart.server.url + "/other/callback")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_expired_code_is_invalid_grant(smart):
    code, verifier = smart.code()
    with smart.server.app.app_context():
        row = db.session.get(SandboxAuthCode, sha256_hex(code))
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()

    response = smart.token(code, verifier)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_reused_code_is_invalid_grant_and_revokes_its_token(smart):
    code, verifier = smart.code()
    first = smart.token(code, verifier).json()
    assert smart.fhir("GET", "Patient/pat-1", first["access_token"]).status_code == 200

    second = smart.token(code, verifier)

    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert smart.fhir("GET", "Patient/pat-1", first["access_token"]).status_code == 401


def test_unknown_code_is_invalid_grant(smart):
    response = smart.token("not-a-code", smart.pkce()[0])

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_issued_to_another_client_is_invalid_grant(smart, live_server, client_jwks_server):
    from tests.integration.conftest import SmartFlow

    code, verifier = smart.code()
    other = SmartFlow(live_server, client_jwks_server).register()

    response = other.token(code, verifier)

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(("field", "value", "error"), [
    ("grant_type", "refresh_token", "unsupported_grant_type"),
    ("grant_type", None, "invalid_request"),
    ("code_verifier", None, "invalid_request"),
    ("redirect_uri", None, "invalid_request"),
    ("code", None, "invalid_request"),
])
def test_token_request_errors(smart, field, value, error):
    code, verifier = smart.code()

    response = smart.token(code, verifier, **{field: value})

    assert response.status_code == 400
    assert response.json()["error"] == error


# --- token: client authentication -------------------------------------------------------

def _other_rsa_key() -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": "test-rsa"}, private=True)


@pytest.mark.parametrize(("make_assertion", "reason"), [
    pytest.param(lambda s: s.assertion(key=_other_rsa_key()), "signature",
                 id="wrong-key-same-kid"),
    pytest.param(lambda s: s.assertion(key=ECKey.generate_key("P-384"), alg="ES384", kid=None),
                 "signature", id="wrong-key-no-kid"),
    pytest.param(lambda s: s.assertion(aud=s.server.url + "/elsewhere/token"), "aud",
                 id="wrong-aud"),
    pytest.param(lambda s: s.assertion(exp=int(time.time()) - 120), "expired", id="expired"),
    pytest.param(lambda s: s.assertion(exp=None), "exp", id="no-exp"),
    pytest.param(lambda s: s.assertion(exp=int(time.time()) + 3600), "5 minutes",
                 id="exp-too-far"),
    pytest.param(lambda s: s.assertion(jti=None), "jti", id="no-jti"),
    pytest.param(lambda s: s.assertion(sub="someone-else"), "sub", id="sub-not-client"),
    # Signed with our key but claiming to be another client: that client's keys don't match.
    pytest.param(lambda s: s.assertion(iss="virtual-visits", sub="virtual-visits"), "",
                 id="other-client"),
    pytest.param(lambda s: s.assertion(kid="unknown-kid"), "kid", id="unknown-kid"),
    pytest.param(lambda s: "not.a.jwt", "JWS", id="garbage"),
])
def test_bad_client_assertion_is_invalid_client(smart, make_assertion, reason):
    code, verifier = smart.code()

    response = smart.token(code, verifier, assertion=make_assertion(smart))

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert reason in response.json()["error_description"]


def test_hmac_signed_assertion_is_invalid_client(smart):
    from joserfc.jwk import OctKey

    code, verifier = smart.code()
    key = OctKey.import_key("a-shared-secret-that-is-long-enough-for-hs256!")
    assertion = smart.assertion(key=key, alg="HS256", kid=None)

    response = smart.token(code, verifier, assertion=assertion)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_replayed_client_assertion_is_invalid_client(smart):
    assertion = smart.assertion()
    code, verifier = smart.code()
    assert smart.token(code, verifier, assertion=assertion).status_code == 200
    code, verifier = smart.code()

    response = smart.token(code, verifier, assertion=assertion)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_assertion_without_kid_tries_every_key(smart):
    code, verifier = smart.code()

    response = smart.token(code, verifier, assertion=smart.assertion(kid=None))

    assert response.status_code == 200, response.text


def test_missing_client_authentication_is_invalid_client(smart):
    code, verifier = smart.code()

    response = smart.token(code, verifier, client_assertion=None, client_assertion_type=None)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_the_app_is_registered_as_a_private_key_jwt_client(live_server):
    from sandbox_ehr.clients import get_client

    with live_server.app.app_context():
        client = get_client("virtual-visits")

    assert client.jwks_url == live_server.url + "/.well-known/jwks.json"
    assert set(client.redirect_uris) == {live_server.url + "/launch/callback",
                                         live_server.url + "/patient/launch/callback",
                                         live_server.url + "/admin/endpoints/approve/callback"}
    assert not client.has_secret
