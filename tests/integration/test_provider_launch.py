"""The provider's SMART EHR launch against the sandbox EHR, over real HTTP.

A ``requests.Session`` plays the browser and follows redirects one at a time, so each
leg (EHR launch, our /launch, the EHR's authorize, our callback) can be inspected or
tampered with. The sandbox is registered as an approved endpoint the way an admin would.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import RSAKey
from sqlalchemy import func, select, text

import at_rest
from ehr.models import EhrEndpoint, LaunchSession
from tests.integration.conftest import change_launch_context
from tests.conftest import POSTGRES_URL, _backends
from ehr.services import add_endpoint, approve_endpoint, ensure_endpoint
from extensions import db
from provider_launch.auth import staff_for_visit
from visits.models import Appointment, AuditLog, Participant

FRAME_ORIGIN = "https://ehr-web.example.org"


@pytest.fixture(scope="module", params=_backends())
def live_server_config(request):
    """The app's own data on SQLite, and on PostgreSQL too when DATABASE_URL is set."""
    if request.param == "sqlite":
        yield {}
        return
    import uuid

    from sqlalchemy import create_engine

    from settings import sqlalchemy_url

    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(sqlalchemy_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    yield {"DATABASE_URL": f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"}
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture(scope="module")
def sandbox_endpoint(live_server):
    """The sandbox as an approved EHR of the app, allowed to frame our pages."""
    with live_server.app.app_context():
        endpoint = ensure_endpoint(
            "sandbox", live_server.url + "/sandbox/fhir", client_id="virtual-visits",
            scopes="launch openid fhirUser user/*.rs", approved_by="test",
            frame_ancestors=[FRAME_ORIGIN])
        return endpoint.id


@pytest.fixture
def browser() -> requests.Session:
    http = requests.Session()
    http.trust_env = False  # loopback calls must not go through a proxy
    return http


class Launch:
    """One provider launch, driven step by step."""

    def __init__(self, server, http: requests.Session, appointment: str = "appt-1") -> None:
        self.server, self.http, self.appointment = server, http, appointment

    def ehr_launch(self) -> str:
        """The sandbox's launch button: returns our /launch URL with iss and launch."""
        response = self.http.get(f"{self.server.url}/sandbox/launch/provider/{self.appointment}",
                                 allow_redirects=False)
        assert response.status_code == 302, response.text
        return response.headers["Location"]

    def to_callback(self, launch_url: str | None = None) -> str:
        """Through /launch and the EHR's authorize: returns our callback URL with the code."""
        ours = self.http.get(launch_url or self.ehr_launch(), allow_redirects=False)
        assert ours.status_code == 302, ours.text
        ehr = self.http.get(ours.headers["Location"], allow_redirects=False)
        assert ehr.status_code == 302, ehr.text
        return ehr.headers["Location"]

    def run(self, **context_changes) -> requests.Response:
        """The whole launch; ``context_changes`` edit the EHR's launch context first."""
        launch_url = self.ehr_launch()
        if context_changes:
            change_launch_context(self.server, launch_url, **context_changes)
        return self.http.get(self.to_callback(launch_url), allow_redirects=False)


def counts(server) -> dict[str, int]:
    with server.app.app_context():
        return {model.__name__: db.session.scalar(select(func.count()).select_from(model))
                for model in (EhrEndpoint, Appointment, Participant, LaunchSession)}


def session_cookie(server, http: requests.Session) -> dict:
    app = server.app
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.loads(http.cookies[app.config["SESSION_COOKIE_NAME"]])


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def assert_refused(response: requests.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert f'data-reason="{reason}"' in response.text
    assert "text/html" in response.headers["Content-Type"]


# --- success ----------------------------------------------------------------------------

def test_launch_creates_the_visit_from_fhir_and_a_launch_session(live_server, sandbox_endpoint,
                                                                  browser):
    response = Launch(live_server, browser, "appt-3").run()

    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith("/visit/")
    appointment_id = int(location.rsplit("/", 1)[1])
    assert response.headers["Content-Security-Policy"] == \
        f"frame-ancestors 'self' {FRAME_ORIGIN}"
    cookie = session_cookie(live_server, browser)
    assert cookie["smart_pending"] == {}
    with live_server.app.app_context():
        appointment = db.session.get(Appointment, appointment_id)
        assert appointment.ehr_appointment_id == "appt-3"
        assert appointment.endpoint_id == sandbox_endpoint
        assert appointment.status == "booked"
        assert appointment.department_display == "Pediatrics"
        assert appointment.timezone == "America/Chicago"
        assert (appointment.end_at - appointment.start_at).total_seconds() == 30 * 60
        people = {p.ehr_user_id: p for p in appointment.participants}
        assert set(people) == {"Patient/pat-4", "Practitioner/prac-2"}
        assert people["Patient/pat-4"].role == "patient"
        assert people["Patient/pat-4"].display_name is None
        assert people["Practitioner/prac-2"].role == "provider"
        assert people["Practitioner/prac-2"].display_name == "Dr. Robin Sampleton"
        launch = staff_for_visit(appointment_id, cookie["launch_sessions"])
        assert launch is not None
        assert launch.participant_id == people["Practitioner/prac-2"].id
        assert launch.fhir_user == "Practitioner/prac-2"
        assert launch.patient_ref == "Patient/pat-4"
        assert launch.encounter_ref == "Encounter/enc-3"
        assert "launch" in launch.scope.split()
        token = at_rest.decrypt(launch.access_token_encrypted, "access-token")
        stored = db.session.execute(text("SELECT * FROM launch_sessions")).all()
        assert token and token not in repr(stored)
        assert staff_for_visit(appointment_id + 1000, cookie["launch_sessions"]) is None
    # The token really is the EHR's: it reads FHIR.
    assert browser.get(f"{live_server.url}/sandbox/fhir/Appointment/appt-3",
                       headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_relaunch_by_the_same_provider_reuses_the_participant(live_server, sandbox_endpoint,
                                                              browser):
    first = Launch(live_server, browser, "appt-5").run()
    before = counts(live_server)

    second = Launch(live_server, browser, "appt-5").run()

    assert second.headers["Location"] == first.headers["Location"]
    after = counts(live_server)
    assert after["Participant"] == before["Participant"]
    assert after["Appointment"] == before["Appointment"]
    assert after["LaunchSession"] == before["LaunchSession"] + 1
    appointment_id = int(first.headers["Location"].rsplit("/", 1)[1])
    with live_server.app.app_context():
        sessions = db.session.scalars(select(LaunchSession).filter_by(
            appointment_id=appointment_id)).all()
        assert len({s.participant_id for s in sessions}) == 1
        assert len(sessions) == 2


def test_without_fhir_context_the_encounter_leads_to_the_appointment(live_server,
                                                                       sandbox_endpoint, browser):
    response = Launch(live_server, browser, "appt-2").run(appointment=None)

    assert response.status_code == 302, response.text
    with live_server.app.app_context():
        appointment = db.session.get(Appointment, int(response.headers["Location"].split("/")[-1]))
        assert appointment.ehr_appointment_id == "appt-2"


def test_several_visits_stay_open_in_one_browser(live_server, sandbox_endpoint, browser):
    first = Launch(live_server, browser, "appt-4").run()
    second = Launch(live_server, browser, "appt-6").run()

    remembered = session_cookie(live_server, browser)["launch_sessions"]
    ids = [int(r.headers["Location"].split("/")[-1]) for r in (first, second)]
    with live_server.app.app_context():
        assert all(staff_for_visit(i, remembered) is not None for i in ids)


# --- refusals before anything is asked of the EHR ---------------------------------------

def test_unknown_iss_is_refused_with_instructions_and_nothing_stored(live_server, browser):
    before = counts(live_server)

    response = browser.get(f"{live_server.url}/launch",
                           params={"iss": "https://unknown-ehr.example/fhir", "launch": "x"},
                           allow_redirects=False)

    assert_refused(response, 403, "unknown_iss")
    assert "flask endpoints add NAME https://unknown-ehr.example/fhir" in response.text
    assert "flask endpoints approve" in response.text
    assert "Set-Cookie" not in response.headers
    assert counts(live_server) == before


def test_unapproved_endpoint_is_refused(live_server, browser):
    with live_server.app.app_context():
        add_endpoint("waiting", "https://waiting-ehr.example/fhir/", client_id="vv")
    before = counts(live_server)

    response = browser.get(f"{live_server.url}/launch",
                           params={"iss": "https://waiting-ehr.example/fhir", "launch": "x"},
                           allow_redirects=False)

    assert_refused(response, 403, "unapproved_endpoint")
    assert "flask endpoints approve waiting --by" in response.text
    assert "Set-Cookie" not in response.headers
    assert counts(live_server) == before


@pytest.mark.parametrize("params", [{"launch": "x"}, {"iss": "https://a.example/fhir"}])
def test_launch_without_iss_or_launch_is_a_bad_request(live_server, browser, params):
    response = browser.get(f"{live_server.url}/launch", params=params, allow_redirects=False)

    assert_refused(response, 400, "missing_launch_params")


def test_ehr_that_does_not_answer_gets_a_friendly_page(live_server, browser):
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with live_server.app.app_context():
        add_endpoint("down", f"http://127.0.0.1:{port}/fhir", client_id="vv")
        approve_endpoint("down", by="test")

    response = browser.get(f"{live_server.url}/launch",
                           params={"iss": f"http://127.0.0.1:{port}/fhir", "launch": "x"},
                           allow_redirects=False)

    assert_refused(response, 503, "ehr_unavailable")
    assert "The EHR did not answer" in response.text


def test_authorize_request_carries_pkce_state_nonce_aud_and_launch(live_server,
                                                                   sandbox_endpoint, browser):
    launch_url = Launch(live_server, browser).ehr_launch()
    iss = parse_qs(urlsplit(launch_url).query)["iss"][0]

    response = browser.get(launch_url, allow_redirects=False)

    query = {k: v[0] for k, v in parse_qs(urlsplit(response.headers["Location"]).query).items()}
    assert response.headers["Location"].startswith(live_server.url + "/sandbox/oauth/authorize?")
    assert query["aud"] == iss
    assert query["launch"] == parse_qs(urlsplit(launch_url).query)["launch"][0]
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"] and query["state"] != query["nonce"]
    assert query["redirect_uri"] == live_server.url + "/launch/callback"
    assert query["client_id"] == "virtual-visits"
    assert query["scope"] == "launch openid fhirUser user/*.rs"
    assert query["state"] in session_cookie(live_server, browser)["smart_pending"]


# --- refusals at the callback -----------------------------------------------------------

@pytest.mark.parametrize("state", ["forged-state", ""])
def test_callback_with_a_bad_state_is_refused(live_server, sandbox_endpoint, browser, state):
    callback = Launch(live_server, browser).to_callback()
    before = counts(live_server)

    response = browser.get(with_query(callback, state=state), allow_redirects=False)

    assert_refused(response, 400, "bad_state")
    assert counts(live_server) == before


def test_replayed_callback_is_refused(live_server, sandbox_endpoint, browser):
    callback = Launch(live_server, browser, "appt-1").to_callback()
    old_cookies = browser.cookies.copy()
    assert browser.get(callback, allow_redirects=False).status_code == 302
    before = counts(live_server)

    same_browser = browser.get(callback, allow_redirects=False)
    stale_cookie = requests.Session()
    stale_cookie.trust_env = False
    stale_cookie.cookies = old_cookies
    replayed_code = stale_cookie.get(callback, allow_redirects=False)

    assert_refused(same_browser, 400, "bad_state")
    assert_refused(replayed_code, 400, "token_refused")
    assert "invalid_grant" in replayed_code.text
    assert counts(live_server) == before


def test_oauth_error_from_the_ehr_is_explained(live_server, sandbox_endpoint, browser):
    ours = browser.get(Launch(live_server, browser).ehr_launch(), allow_redirects=False)
    state = parse_qs(urlsplit(ours.headers["Location"]).query)["state"][0]

    response = browser.get(f"{live_server.url}/launch/callback",
                           params={"state": state, "error": "access_denied",
                                   "error_description": "<script>no</script>"},
                           allow_redirects=False)

    assert_refused(response, 400, "ehr_refused")
    assert "access_denied" in response.text
    assert "<script>no" not in response.text
    assert response.headers["Content-Security-Policy"] == \
        f"frame-ancestors 'self' {FRAME_ORIGIN}"


def test_expired_id_token_is_refused_and_nothing_stored(live_server, sandbox_endpoint, browser,
                                                        monkeypatch):
    monkeypatch.setitem(live_server.app.config, "SANDBOX_TOKEN_TTL_SECONDS", -300)
    before = counts(live_server)

    response = Launch(live_server, browser, "appt-6").run()

    assert_refused(response, 400, "id_token_invalid")
    assert counts(live_server) == before


def test_id_token_signed_by_another_key_is_refused(live_server, sandbox_endpoint, browser,
                                                   monkeypatch):
    import sandbox_ehr.keys

    real_key = sandbox_ehr.keys.signing_key
    impostor = RSAKey.generate_key(2048, private=True)

    def forged_sign(claims):
        header = {"alg": "RS256", "typ": "JWT", "kid": real_key().kid}
        return jwt.encode(header, claims, impostor, algorithms=["RS256"])

    monkeypatch.setattr(sandbox_ehr.keys, "sign", forged_sign)
    before = counts(live_server)

    response = Launch(live_server, browser, "appt-6").run()

    assert_refused(response, 400, "id_token_invalid")
    assert counts(live_server) == before


@pytest.mark.parametrize(("changes", "status", "reason"), [
    ({"appointment": None, "encounter": None}, 400, "missing_appointment"),
    ({"fhirUser": None}, 400, "missing_id_token"),
    ({"fhirUser": "Patient/pat-1"}, 403, "not_a_practitioner"),
    ({"patient": "pat-2"}, 400, "context_mismatch"),
    ({"appointment": "no-such-appointment"}, 404, "appointment_not_found"),
])
def test_missing_or_wrong_context_says_what_the_ehr_did_not_send(
        live_server, sandbox_endpoint, browser, changes, status, reason):
    before = counts(live_server)

    response = Launch(live_server, browser, "appt-1").run(**changes)

    assert_refused(response, status, reason)
    assert "EHR analyst" in response.text
    assert counts(live_server) == before


def test_error_pages_are_translated(live_server, browser):
    response = browser.get(f"{live_server.url}/launch",
                           params={"iss": "https://unknown-ehr.example/fhir", "launch": "x"},
                           headers={"Accept-Language": "es"}, allow_redirects=False)

    assert response.status_code == 403
    assert 'lang="es"' in response.text
    assert "This EHR is not set up" not in response.text


# --- CLI --------------------------------------------------------------------------------

def test_endpoints_add_list_and_approve(runner):
    added = runner.invoke(args=[
        "endpoints", "add", "epic-test", "https://fhir.example.org/api/FHIR/R4/",
        "--client-id", "abc-123", "--environment", "test", "--frame-ancestor",
        "https://Hyperspace.example.org", "--timezone", "America/New_York"])
    listed_before = json.loads(runner.invoke(args=["endpoints", "list", "--json"]).output)
    approved = runner.invoke(args=["endpoints", "approve", "epic-test", "--by", "Pat Admin"])
    listed = json.loads(runner.invoke(args=["endpoints", "list", "--json"]).output)
    text_listing = runner.invoke(args=["endpoints", "list"]).output

    assert added.exit_code == 0, added.output
    assert "flask endpoints approve epic-test" in added.output
    assert listed_before[0]["approved"] is False
    assert approved.exit_code == 0, approved.output
    assert listed == [{
        "name": "epic-test", "fhir_base_url": "https://fhir.example.org/api/FHIR/R4",
        "environment": "test", "client_id": "abc-123", "patient_client_id": None,
        "scopes": "launch openid fhirUser user/*.rs", "approved": True,
        "approved_by": "Pat Admin", "approved_at": listed[0]["approved_at"],
        "frame_ancestors": ["https://hyperspace.example.org"], "timezone": "America/New_York",
        "phone_region": "US", "link_valid_after_end_minutes": 120,
        "lobby_opens_before_minutes": 30, "require_staff_sso": False, "clinic_phone": None,
    }]
    assert listed[0]["approved_at"]
    assert "epic-test" in text_listing and "approved by Pat Admin" in text_listing


@pytest.mark.parametrize(("args", "message"), [
    (["bad name", "https://a.example/fhir"], "name must be"),
    (["ok", "not a url"], "http(s) URL"),
    (["ok", "http://ehr.example.org/fhir"], "https"),
    (["ok", "https://a.example/fhir?x=1"], "query"),
    (["ok", "https://a.example/fhir", "--frame-ancestor", "https://a.example/path"], "origin"),
    (["ok", "https://a.example/fhir", "--timezone", "Mars/Olympus"], "time zone"),
    (["ok", "https://a.example/fhir", "--scopes", "openid user/*.rs"], "launch"),
])
def test_endpoints_add_rejects_bad_input(runner, args, message):
    result = runner.invoke(args=["endpoints", "add", *args, "--client-id", "c"])

    assert result.exit_code != 0
    assert message in result.output


def test_endpoints_update_withdraws_approval_on_launch_fields_and_is_audited(runner, app):
    runner.invoke(args=["endpoints", "add", "epic-prod", "https://fhir.example.org/R4",
                        "--client-id", "abc", "--phone-region", "br",
                        "--link-valid-minutes", "60"])
    runner.invoke(args=["endpoints", "approve", "epic-prod", "--by", "Pat Admin"])

    quiet = runner.invoke(args=["endpoints", "update", "epic-prod", "--lobby-opens-minutes",
                                "15", "--timezone", "America/Sao_Paulo"])
    still = json.loads(runner.invoke(args=["endpoints", "list", "--json"]).output)[0]
    moved = runner.invoke(args=["endpoints", "update", "epic-prod", "--client-id", "xyz"])
    after = json.loads(runner.invoke(args=["endpoints", "list", "--json"]).output)[0]
    bad = runner.invoke(args=["endpoints", "update", "epic-prod", "--phone-region", "XX"])

    assert quiet.exit_code == 0 and "approval" not in quiet.output, quiet.output
    assert (still["approved"], still["lobby_opens_before_minutes"], still["timezone"],
            still["phone_region"], still["link_valid_after_end_minutes"]) == \
        (True, 15, "America/Sao_Paulo", "BR", 60)
    assert moved.exit_code == 0 and "approval was withdrawn" in moved.output
    assert (after["approved"], after["client_id"]) == (False, "xyz")
    assert bad.exit_code != 0
    with app.app_context():
        trail = [(row.actor, row.action) for row in db.session.execute(
            db.select(AuditLog).where(AuditLog.target_id == "epic-prod")
            .order_by(AuditLog.id)).scalars()]
    assert trail == [("admin:cli", "admin.endpoint.create"),
                     ("admin:cli", "admin.endpoint.approve"),
                     ("admin:cli", "admin.endpoint.update"),
                     ("admin:cli", "admin.endpoint.update")]


def test_endpoints_add_rejects_duplicates(runner):
    runner.invoke(args=["endpoints", "add", "one", "https://a.example/fhir", "--client-id", "c"])

    same_name = runner.invoke(args=["endpoints", "add", "one", "https://b.example/fhir",
                                    "--client-id", "c"])
    same_url = runner.invoke(args=["endpoints", "add", "two", "https://A.example/fhir/",
                                   "--client-id", "c"])

    assert same_name.exit_code != 0 and "already exists" in same_name.output
    assert same_url.exit_code != 0 and "already registered" in same_url.output


def test_endpoints_approve_unknown_name_fails(runner):
    result = runner.invoke(args=["endpoints", "approve", "nope", "--by", "me"])

    assert result.exit_code != 0
    assert "no endpoint named 'nope'" in result.output
