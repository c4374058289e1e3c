"""Staff single sign-on on the provider launch, against the sandbox EHR and the sandbox's
OpenID provider (``/sandbox/idp``), over real HTTP.

A ``requests.Session`` plays the browser and follows one redirect at a time, so each leg
(EHR launch, our callback, ``/sso/login``, the provider's authorize, ``/sso/callback``,
``/launch/signed-in/…``) can be inspected or tampered with.
"""
from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from sqlalchemy import delete, func, select

from ehr.models import LaunchSession
from ehr.services import ensure_endpoint
from extensions import db
from staff_sso.models import StaffIdentityLink
from tests.integration.conftest import use_sandbox_idp
from tests.integration.test_provider_launch import (  # noqa: F401  (fixtures)
    Launch, assert_refused, browser, counts, live_server_config, session_cookie, with_query)

SSO_CLIENT_ID = "vv-staff-test"
SSO_SECRET = "staff-sso-test-secret"
DEMO_SUBJECT = "staff-0001"


@pytest.fixture(scope="module")
def sso(live_server):
    """Point the app's staff sign-in at the sandbox provider and register the app there."""
    use_sandbox_idp(live_server, SSO_CLIENT_ID, SSO_SECRET)
    return live_server.url + "/sandbox/idp"


def _sandbox_endpoint(server, *, require_staff_sso: bool) -> int:
    with server.app.app_context():
        endpoint = ensure_endpoint("sandbox", server.url + "/sandbox/fhir",
                                   client_id="virtual-visits",
                                   scopes="launch openid fhirUser user/*.rs", approved_by="test",
                                   require_staff_sso=require_staff_sso)
        db.session.execute(delete(StaffIdentityLink))
        db.session.commit()
        return endpoint.id


@pytest.fixture
def sso_endpoint(live_server, sso) -> int:
    """The sandbox as an approved EHR that requires staff sign-in; nobody linked yet."""
    return _sandbox_endpoint(live_server, require_staff_sso=True)


@pytest.fixture
def plain_endpoint(live_server, sso) -> int:
    """The sandbox as an approved EHR without the requirement (SSO still configured)."""
    return _sandbox_endpoint(live_server, require_staff_sso=False)


def follow(server, http: requests.Session, response: requests.Response) -> requests.Response:
    """One redirect, as a browser would take it."""
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    url = location if location.startswith("http") else server.url + location
    return http.get(url, allow_redirects=False)


def path_of(response: requests.Response) -> str:
    return urlsplit(response.headers["Location"]).path


def links(server) -> list[tuple[int, str, str, str]]:
    with server.app.app_context():
        return [(link.endpoint_id, link.ehr_user_id, link.sso_issuer, link.sso_subject)
                for link in db.session.scalars(select(StaffIdentityLink))]


def launch_sessions(server) -> int:
    with server.app.app_context():
        return db.session.scalar(select(func.count()).select_from(LaunchSession))


def to_idp(server, http: requests.Session, appointment: str = "appt-3") -> requests.Response:
    """EHR launch through our callback and /sso/login: the redirect to the provider."""
    callback = Launch(server, http, appointment).run()
    assert path_of(callback) == "/sso/login", callback.headers.get("Location")
    return follow(server, http, callback)


def sign_in(server, http: requests.Session, appointment: str = "appt-3") -> requests.Response:
    """A whole first launch: our answer to /launch/signed-in (the visit redirect)."""
    at_idp = to_idp(server, http, appointment)
    back = follow(server, http, at_idp)  # the provider auto-approves
    signed_in = follow(server, http, back)  # /sso/callback
    assert path_of(signed_in).startswith("/launch/signed-in/"), signed_in.text
    return follow(server, http, signed_in)


# --- the flow ---------------------------------------------------------------------------

def test_first_launch_signs_in_at_the_provider_then_opens_the_visit_and_links(
        live_server, sso, sso_endpoint, browser):
    callback = Launch(live_server, browser, "appt-3").run()
    held_cookie = browser.cookies.get(live_server.app.config["SESSION_COOKIE_NAME"])
    at_login = follow(live_server, browser, callback)
    authorize = urlsplit(at_login.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(authorize.query).items()}
    back = follow(live_server, browser, at_login)
    signed_in = follow(live_server, browser, back)
    visit = follow(live_server, browser, signed_in)

    assert path_of(callback) == "/sso/login"
    assert at_login.headers["Location"].startswith(sso + "/authorize?")
    assert query["client_id"] == SSO_CLIENT_ID
    assert query["redirect_uri"] == live_server.url + "/sso/callback"
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"] and query["state"] != query["nonce"]
    assert query["scope"] == "openid email profile"
    assert path_of(back) == "/sso/callback"
    assert visit.status_code == 302 and path_of(visit).startswith("/visit/")
    assert links(live_server) == [(sso_endpoint, "Practitioner/prac-2", sso, DEMO_SUBJECT)]
    cookie = session_cookie(live_server, browser)
    assert cookie["sso_held_launches"] == {} and "staff_sso_identity" not in cookie
    appointment_id = int(path_of(visit).rsplit("/", 1)[1])
    assert str(appointment_id) in cookie["launch_sessions"]
    with live_server.app.app_context():
        from provider_launch.auth import access_token_of, staff_for_visit

        launch = staff_for_visit(appointment_id, cookie["launch_sessions"])
        token = access_token_of(launch)
    # While held, neither the EHR's token nor the patient was readable in the cookie.
    held = _readable(held_cookie)
    assert token and token not in held and "pat-4" not in held


def _readable(cookie: str) -> str:
    """A Flask session cookie as anyone holding it can read it (signed, not encrypted)."""
    import zlib

    payload = cookie.lstrip(".").split(".")[0]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    return (zlib.decompress(raw) if cookie.startswith(".") else raw).decode()


def test_second_launch_by_a_linked_user_goes_straight_to_the_visit(
        live_server, sso, sso_endpoint, browser):
    sign_in(live_server, browser, "appt-3")
    with live_server.app.app_context():
        first_use = db.session.scalars(select(StaffIdentityLink)).one().last_used_at
    other_browser = requests.Session()
    other_browser.trust_env = False

    response = Launch(live_server, other_browser, "appt-5").run()

    assert response.status_code == 302 and path_of(response).startswith("/visit/")
    assert len(links(live_server)) == 1
    with live_server.app.app_context():
        assert db.session.scalars(select(StaffIdentityLink)).one().last_used_at > first_use


def test_endpoint_without_the_requirement_never_goes_to_the_provider(
        live_server, sso, plain_endpoint, browser):
    response = Launch(live_server, browser, "appt-3").run()

    assert response.status_code == 302 and path_of(response).startswith("/visit/")
    assert links(live_server) == []


def test_another_ehr_user_must_sign_in_too(live_server, sso, sso_endpoint, browser):
    sign_in(live_server, browser, "appt-3")  # Practitioner/prac-2

    response = Launch(live_server, browser, "appt-1").run()  # Practitioner/prac-1

    assert path_of(response) == "/sso/login"


# --- refusals -----------------------------------------------------------------------------

def test_skipping_the_sign_in_does_not_open_the_visit(live_server, sso, sso_endpoint, browser):
    callback = Launch(live_server, browser, "appt-3").run()
    next_url = parse_qs(urlsplit(callback.headers["Location"]).query)["next"][0]
    before = launch_sessions(live_server)

    response = browser.get(live_server.url + next_url, allow_redirects=False)
    replay = browser.get(live_server.url + next_url, allow_redirects=False)

    assert_refused(response, 400, "staff_sso_missing")
    assert_refused(replay, 400, "bad_state")
    assert links(live_server) == [] and launch_sessions(live_server) == before


@pytest.mark.parametrize("state", ["forged-state", ""])
def test_bad_state_at_the_sso_callback_is_refused(live_server, sso, sso_endpoint, browser,
                                                  state):
    back = follow(live_server, browser, to_idp(live_server, browser))
    before = launch_sessions(live_server)

    response = browser.get(with_query(back.headers["Location"], state=state),
                           allow_redirects=False)

    assert_sso_refused(response, 400, "bad_state")
    assert links(live_server) == [] and launch_sessions(live_server) == before


def test_tampered_id_token_is_refused(live_server, sso, sso_endpoint, browser, monkeypatch):
    import sandbox_ehr.keys

    back = follow(live_server, browser, to_idp(live_server, browser))
    real_sign = sandbox_ehr.keys.sign

    def tampered_sign(claims):
        header, payload, signature = real_sign(claims).split(".")
        body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        body["sub"] = "someone-else"
        forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=").decode()
        return f"{header}.{forged}.{signature}"

    monkeypatch.setattr(sandbox_ehr.keys, "sign", tampered_sign)
    before = launch_sessions(live_server)

    response = follow(live_server, browser, back)

    assert_sso_refused(response, 400, "id_token_invalid")
    assert links(live_server) == [] and launch_sessions(live_server) == before


def test_id_token_with_another_nonce_is_refused(live_server, sso, sso_endpoint, browser):
    at_idp = to_idp(live_server, browser)
    before = launch_sessions(live_server)

    back = browser.get(with_query(at_idp.headers["Location"], nonce="not-the-one-we-sent"),
                       allow_redirects=False)
    response = follow(live_server, browser, back)

    assert_sso_refused(response, 400, "id_token_invalid")
    assert links(live_server) == [] and launch_sessions(live_server) == before


def test_provider_error_is_explained(live_server, sso, sso_endpoint, browser):
    at_idp = to_idp(live_server, browser)
    state = parse_qs(urlsplit(at_idp.headers["Location"]).query)["state"][0]

    response = browser.get(f"{live_server.url}/sso/callback",
                           params={"state": state, "error": "access_denied"},
                           allow_redirects=False)

    assert_sso_refused(response, 400, "idp_refused")
    assert "access_denied" in response.text
    assert links(live_server) == []


def test_required_but_not_configured_says_what_to_set(live_server, sso, sso_endpoint, browser,
                                                      monkeypatch):
    monkeypatch.setitem(live_server.app.config, "STAFF_SSO_ISSUER", None)
    before = counts(live_server)

    response = Launch(live_server, browser, "appt-3").run()

    assert_refused(response, 503, "staff_sso_not_configured")
    assert "VV_STAFF_SSO_ISSUER" in response.text
    assert "flask endpoints approve sandbox --by YOUR_NAME --no-require-staff-sso" in response.text
    assert counts(live_server) == before and links(live_server) == []


def test_sso_pages_are_translated(live_server, sso, browser):
    response = browser.get(f"{live_server.url}/sso/callback", params={"state": "x"},
                           headers={"Accept-Language": "pt-BR"}, allow_redirects=False)

    assert_sso_refused(response, 400, "bad_state")
    assert 'lang="pt-BR"' in response.text
    assert "This sign-in cannot be used" not in response.text


@pytest.mark.parametrize("next_url", ["https://evil.example/x", "//evil.example/x",
                                      "/\\evil.example"])
def test_login_never_redirects_off_site(live_server, sso, browser, next_url):
    at_idp = browser.get(f"{live_server.url}/sso/login", params={"next": next_url},
                         allow_redirects=False)
    back = follow(live_server, browser, at_idp)

    response = follow(live_server, browser, back)

    assert response.headers["Location"] == "/"


def assert_sso_refused(response: requests.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert 'data-testid="sso-error"' in response.text
    assert f'data-reason="{reason}"' in response.text


# --- the sandbox provider ------------------------------------------------------------------

def _provider_code(server, http: requests.Session, verifier: str) -> str:
    import hashlib

    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    response = http.get(f"{server.url}/sandbox/idp/authorize", allow_redirects=False, params={
        "response_type": "code", "client_id": SSO_CLIENT_ID,
        "redirect_uri": server.url + "/sso/callback", "scope": "openid email",
        "state": "s", "nonce": "n", "code_challenge": challenge,
        "code_challenge_method": "S256"})
    assert response.status_code == 302, response.text
    return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_provider_token_endpoint_takes_basic_or_post_and_checks_pkce(live_server, sso, browser,
                                                                     auth):
    verifier = "v" * 43
    form = {"grant_type": "authorization_code", "redirect_uri": live_server.url + "/sso/callback"}
    credentials = ({"auth": (SSO_CLIENT_ID, SSO_SECRET)} if auth == "basic"
                   else {"data_extra": {"client_id": SSO_CLIENT_ID, "client_secret": SSO_SECRET}})
    extra = credentials.pop("data_extra", {})

    wrong = browser.post(f"{sso}/token", data={
        **form, **extra, "code": _provider_code(live_server, browser, verifier),
        "code_verifier": "w" * 43}, **credentials)
    right = browser.post(f"{sso}/token", data={
        **form, **extra, "code": _provider_code(live_server, browser, verifier),
        "code_verifier": verifier}, **credentials)
    bad_secret = browser.post(f"{sso}/token", auth=(SSO_CLIENT_ID, "nope"), data={
        **form, "code": _provider_code(live_server, browser, verifier), "code_verifier": verifier})

    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    assert right.status_code == 200, right.text
    assert right.json()["id_token"].count(".") == 2
    assert bad_secret.status_code == 401


def test_provider_codes_are_not_accepted_by_the_ehr_token_endpoint(live_server, sso, browser):
    verifier = "v" * 43
    code = _provider_code(live_server, browser, verifier)

    response = browser.post(f"{live_server.url}/sandbox/oauth/token",
                            auth=(SSO_CLIENT_ID, SSO_SECRET),
                            data={"grant_type": "authorization_code", "code": code,
                                  "redirect_uri": live_server.url + "/sso/callback",
                                  "code_verifier": verifier})

    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


# --- CLI ----------------------------------------------------------------------------------

def test_endpoints_add_and_approve_set_the_requirement(runner):
    added = runner.invoke(args=["endpoints", "add", "epic-sso", "https://fhir.example.org/R4",
                                "--client-id", "c", "--require-staff-sso"])
    listed = json.loads(runner.invoke(args=["endpoints", "list", "--json"]).output)
    turned_off = runner.invoke(args=["endpoints", "approve", "epic-sso", "--by", "Pat",
                                     "--no-require-staff-sso"])
    after_off = json.loads(runner.invoke(args=["endpoints", "list", "--json"]).output)
    approved_again = runner.invoke(args=["endpoints", "approve", "epic-sso", "--by", "Kim"])
    after_again = json.loads(runner.invoke(args=["endpoints", "list", "--json"]).output)

    assert added.exit_code == 0, added.output
    assert listed[0]["require_staff_sso"] is True
    assert turned_off.exit_code == 0 and "not required" in turned_off.output
    assert after_off[0]["require_staff_sso"] is False
    assert approved_again.exit_code == 0
    assert after_again[0]["require_staff_sso"] is False
    assert after_again[0]["approved_by"] == "Pat"
