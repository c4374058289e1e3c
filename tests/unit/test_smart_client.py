"""The SMART client pieces with keys and servers we control: id_token checks, discovery
fallback, the token request's failure modes, and the FHIR client's URL and status rules."""
from __future__ import annotations

import time

import pytest
import requests
import responses
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey

from ehr import smart
from ehr.errors import (EhrUnavailable, FhirForbidden, FhirNotFound, FhirUnauthorized,
                        InvalidIdToken, SmartError, TokenRefused, UntrustedUrl)
from ehr.fhir import FhirClient, relative_reference
from tests.local_http import JsonHandler, serving

ISS = "https://ehr.example.org/fhir"
CLIENT_ID = "virtual-visits"
NONCE = "nonce-123"


@pytest.fixture(scope="module")
def keys() -> dict[str, RSAKey | ECKey]:
    return {"rsa": RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True),
            "other": RSAKey.generate_key(2048, parameters={"kid": "rsa-2"}, private=True),
            "ec": ECKey.generate_key("P-384", parameters={"kid": "ec-1"}, private=True)}


@pytest.fixture(scope="module")
def jwks(keys) -> KeySet:
    return KeySet.import_key_set({"keys": [k.as_dict(private=False) for k in keys.values()]})


def make_token(key, alg: str = "RS256", kid: str | None = "default", **overrides) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "sub": "Practitioner/p1", "aud": CLIENT_ID, "iat": now,
              "exp": now + 300, "nonce": NONCE, "fhirUser": f"{ISS}/Practitioner/p1"}
    claims.update(overrides)
    header = {"alg": alg, "typ": "JWT"}
    kid = key.kid if kid == "default" else kid
    if kid:
        header["kid"] = kid
    return jwt.encode(header, {k: v for k, v in claims.items() if v is not None}, key,
                      algorithms=[alg])


def validate(token: str, jwks: KeySet):
    return smart.validate_id_token(token, jwks, issuers=ISS, client_id=CLIENT_ID, nonce=NONCE)


@pytest.mark.parametrize(("key_name", "alg", "kid"), [
    ("rsa", "RS256", "default"), ("rsa", "RS384", "default"), ("ec", "ES384", "default"),
    ("other", "RS256", None),  # no kid: every suitable key is tried
    ("ec", "ES384", None),
])
def test_valid_id_token_is_accepted(keys, jwks, key_name, alg, kid):
    result = validate(make_token(keys[key_name], alg, kid), jwks)

    assert result.subject == "Practitioner/p1"
    assert result.fhir_user == f"{ISS}/Practitioner/p1"


@pytest.mark.parametrize(("make", "reason"), [
    (lambda k: make_token(RSAKey.generate_key(2048, private=True), kid="rsa-1"), "signature"),
    (lambda k: make_token(RSAKey.generate_key(2048, private=True), kid=None), "signature"),
    (lambda k: make_token(k["rsa"], kid="unknown"), "kid"),
    (lambda k: make_token(k["rsa"], exp=int(time.time()) - 120), "expired"),
    (lambda k: make_token(k["rsa"], exp=None), "exp"),
    (lambda k: make_token(k["rsa"], iat=int(time.time()) + 3600), "iat"),
    (lambda k: make_token(k["rsa"], aud="someone-else"), "aud"),
    (lambda k: make_token(k["rsa"], aud=[CLIENT_ID, "someone-else"]), "azp"),
    (lambda k: make_token(k["rsa"], nonce="other"), "nonce"),
    (lambda k: make_token(k["rsa"], nonce=None), "nonce"),
    (lambda k: make_token(k["rsa"], iss="https://evil.example/fhir"), "iss"),
    (lambda k: make_token(k["rsa"], sub=None), "sub"),
    (lambda k: make_token(OctKey.import_key("a-shared-secret-long-enough-for-hs256!!"),
                          "HS256", kid=None), "alg"),
    (lambda k: "not-a-jwt", "JWS"),
])
def test_bad_id_token_is_rejected(keys, jwks, make, reason):
    with pytest.raises(InvalidIdToken) as caught:
        validate(make(keys), jwks)

    assert reason in caught.value.reason


def test_tampered_payload_is_rejected(keys, jwks):
    import base64
    import json

    header, payload, signature = make_token(keys["rsa"]).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["fhirUser"] = "Practitioner/someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    with pytest.raises(InvalidIdToken, match="signature"):
        validate(f"{header}.{forged}.{signature}", jwks)


def test_trailing_slash_on_the_issuer_is_tolerated(keys, jwks):
    assert validate(make_token(keys["rsa"], iss=ISS + "/"), jwks).subject


@pytest.mark.parametrize(("value", "expected"), [
    ("Practitioner/p1", "Practitioner/p1"),
    (f"{ISS}/Practitioner/p1", "Practitioner/p1"),
    ("https://EHR.example.org/fhir/Practitioner/p1", "Practitioner/p1"),
])
def test_references_relative_or_under_the_base(value, expected):
    assert relative_reference(value, ISS) == expected


@pytest.mark.parametrize("value", ["https://evil.example/fhir/Practitioner/p1",
                                   "https://ehr.example.org/fhirx/Practitioner/p1"])
def test_references_elsewhere_are_untrusted(value):
    with pytest.raises(UntrustedUrl):
        relative_reference(value, ISS)


def test_launch_context_rejects_a_fhir_user_on_another_server():
    token = smart.TokenResponse(access_token="t", scope="launch", expires_in=60, id_token="x",
                                patient=None, encounter=None, fhir_context=())
    claims = smart.IdToken(subject="s", fhir_user="https://evil.example/Practitioner/1",
                           claims={})

    with pytest.raises(InvalidIdToken):
        smart.launch_context(token, claims, ISS)


def test_launch_context_finds_the_appointment_in_fhir_context():
    token = smart.TokenResponse(
        access_token="secret-at", scope="launch", expires_in=None, id_token=None, patient="pat-1",
        encounter="enc-1", fhir_context=("Location/l1", f"{ISS}/Appointment/a1"))

    context = smart.launch_context(token, None, ISS)

    assert context.appointment_ref == "Appointment/a1"
    assert context.patient_ref == "Patient/pat-1"
    assert context.encounter_ref == "Encounter/enc-1"
    assert context.expires_in == smart.DEFAULT_TOKEN_LIFETIME_S
    assert "secret-at" not in repr(context)


# --- discovery --------------------------------------------------------------------------

@responses.activate
def test_discovery_falls_back_to_the_capability_statement():
    responses.get(f"{ISS}/.well-known/smart-configuration", status=404)
    responses.get(f"{ISS}/metadata", json={"resourceType": "CapabilityStatement", "rest": [{
        "security": {"extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [{"url": "authorize", "valueUri": "https://ehr.example.org/authorize"},
                          {"url": "token", "valueUri": "https://ehr.example.org/token"}]}]}}]})

    config = smart.discover(ISS + "/")

    assert config.authorization_endpoint == "https://ehr.example.org/authorize"
    assert config.token_endpoint == "https://ehr.example.org/token"
    assert config.jwks_uri is None


@responses.activate
def test_discovery_of_a_down_ehr_is_unavailable():
    responses.get(f"{ISS}/.well-known/smart-configuration", status=503)

    with pytest.raises(EhrUnavailable):
        smart.discover(ISS)


@responses.activate
def test_discovery_without_endpoints_is_a_smart_error():
    responses.get(f"{ISS}/.well-known/smart-configuration", json={"issuer": ISS})
    responses.get(f"{ISS}/metadata", json={"resourceType": "CapabilityStatement"})

    with pytest.raises(SmartError):
        smart.discover(ISS)


# --- token request ----------------------------------------------------------------------

def _pending() -> smart.PendingLaunch:
    return smart.PendingLaunch(state="s", code_verifier="v" * 43, nonce="n", endpoint_id=1,
                               iss=ISS, token_url="https://ehr.example.org/token",
                               jwks_uri=None, issuer=None, created_at=int(time.time()))


@responses.activate
def test_token_request_uses_private_key_jwt_and_pkce():
    responses.post("https://ehr.example.org/token",
                   json={"access_token": "secret-at", "token_type": "Bearer", "expires_in": 600,
                         "scope": "launch openid", "id_token": "idt", "patient": "p1",
                         "fhirContext": [{"reference": "Appointment/a1"}]})
    seen = []

    token = smart.exchange_code(_pending(), code="c", client_id=CLIENT_ID,
                                redirect_uri="https://vv.example/launch/callback",
                                assertion=lambda cid, url: seen.append((cid, url)) or "signed")

    body = dict(p.split("=", 1) for p in responses.calls[0].request.body.split("&"))
    assert seen == [(CLIENT_ID, "https://ehr.example.org/token")]
    assert body["client_assertion"] == "signed"
    assert body["client_assertion_type"].endswith("jwt-bearer")
    assert body["code_verifier"] == "v" * 43
    assert body["grant_type"] == "authorization_code"
    assert "Authorization" not in responses.calls[0].request.headers
    assert token.fhir_context == ("Appointment/a1",)
    assert token.expires_in == 600
    assert token.access_token == "secret-at"
    assert "secret-at" not in repr(token)


@pytest.mark.parametrize(("reply", "error"), [
    ({"status": 400, "json": {"error": "invalid_grant"}}, TokenRefused),
    ({"status": 401, "json": {"error": "invalid_client"}}, TokenRefused),
    ({"status": 500, "body": "<html>down</html>"}, EhrUnavailable),
    ({"status": 200, "body": "not json"}, EhrUnavailable),
    ({"body": requests.ConnectionError("refused")}, EhrUnavailable),
])
@responses.activate
def test_token_request_failures(reply, error):
    responses.post("https://ehr.example.org/token", **reply)

    with pytest.raises(error):
        smart.exchange_code(_pending(), code="c", client_id=CLIENT_ID,
                            redirect_uri="https://vv.example/cb", assertion=lambda *a: "x")


# --- FHIR client ------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "error"), [(401, FhirUnauthorized), (403, FhirForbidden),
                                               (404, FhirNotFound), (500, EhrUnavailable),
                                               (302, EhrUnavailable)])
@responses.activate
def test_fhir_statuses_map_to_named_errors(status, error):
    responses.get(f"{ISS}/Patient/p1", status=status, json={"resourceType": "OperationOutcome"})

    with pytest.raises(error):
        FhirClient(ISS, "token").read("Patient", "p1")


@responses.activate
def test_fhir_read_sends_the_bearer_token():
    responses.get(f"{ISS}/Patient/p1", json={"resourceType": "Patient", "id": "p1"})

    FhirClient(ISS, "secret-token").read("Patient", "p1")

    assert responses.calls[0].request.headers["Authorization"] == "Bearer secret-token"


@responses.activate
def test_fhir_search_follows_next_links_on_the_base_only():
    responses.get(f"{ISS}/Appointment", json={
        "resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Appointment",
                                                          "id": "a1"}}],
        "link": [{"relation": "next", "url": "https://evil.example/fhir/Appointment?page=2"}]})

    with pytest.raises(UntrustedUrl):
        FhirClient(ISS, "token").search("Appointment", patient="p1")

    assert len(responses.calls) == 1


def test_fhir_unreachable_is_unavailable():
    with pytest.raises(EhrUnavailable):
        FhirClient("http://127.0.0.1:9", "t", timeout=1).read("Patient", "p1")



@pytest.fixture
def jwks_server():
    """A real HTTP server for an issuer's JWKS that counts fetches; ``body`` is served."""
    state = {"body": {"keys": []}, "fetches": 0}

    class Handler(JsonHandler):
        def do_GET(self):  # noqa: N802  (http.server's naming)
            state["fetches"] += 1
            self.send_json(200, state["body"])

    with serving(Handler) as base:
        state["url"] = f"{base}/jwks-{time.time_ns()}"
        yield state


def test_issuer_keys_are_cached_and_refetched_for_a_new_kid_or_when_stale(jwks_server):
    url = jwks_server["url"]
    first = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    jwks_server["body"] = {"keys": [first.as_dict(private=False)]}
    token_k1 = make_token(first, "RS256", "k1")

    smart.issuer_keys(url, token_k1, now=1000.0)
    smart.issuer_keys(url, token_k1, now=1100.0)
    assert jwks_server["fetches"] == 1  # a second launch within five minutes fetches nothing

    rotated = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    jwks_server["body"] = {"keys": [rotated.as_dict(private=False)]}
    found = smart.issuer_keys(url, make_token(rotated, "RS256", "k2"), now=1101.0)
    assert jwks_server["fetches"] == 2 and [k.kid for k in found.keys] == ["k2"]

    smart.issuer_keys(url, make_token(rotated, "RS256", "k2"),
                      now=1101.0 + smart.JWKS_CACHE_SECONDS)
    assert jwks_server["fetches"] == 3  # stale after five minutes
