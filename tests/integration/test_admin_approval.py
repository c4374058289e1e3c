"""Approving an endpoint by signing in to the EHR (a SMART standalone launch against the
sandbox, over real HTTP): only analysts, PKCE/state/nonce/aud on the way out, the
id_token's fhirUser in the approval, nothing changed on any failure, and launches
refused before approval and again after an edit withdraws it."""
from __future__ import annotations

import re
import socket
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
import requests
from sqlalchemy import select

from ehr.models import EhrEndpoint
from ehr.services import add_endpoint, get_endpoint, update_endpoint
from extensions import db
from tests.admin_helpers import create_account, csrf_from, new_session, signed_in_session
from visits.models import AuditLog

@pytest.fixture(scope="module")
def accounts(live_server):
    create_account(live_server.app, "ana", "analyst")
    create_account(live_server.app, "adam", "admin")


@pytest.fixture
def sandbox(live_server):
    """The sandbox registered as an endpoint, not approved, with the app's client id."""
    base = live_server.url + "/sandbox/fhir"
    with live_server.app.app_context():
        endpoint = get_endpoint("sandbox") or add_endpoint(
            "sandbox", base, client_id="virtual-visits",
            scopes="launch openid fhirUser user/*.rs")
        endpoint.client_id = "virtual-visits"
        endpoint.fhir_base_url = base
        endpoint.approved_by = endpoint.approved_at = None
        db.session.commit()
    return base


def start_approval(server, http: requests.Session, name: str = "sandbox") -> requests.Response:
    page = server.url + f"/admin/endpoints/{name}"
    return http.post(page + "/approve", data={"csrf_token": csrf_from(http.get(page).text)},
                     allow_redirects=False)


def authorize_url(response: requests.Response) -> str:
    assert response.status_code == 200, response.text
    match = re.search(r'data-testid="approval-continue" href="([^"]+)"|'
                      r'href="([^"]+)" data-testid="approval-continue"', response.text)
    assert match, response.text
    return (match.group(1) or match.group(2)).replace("&amp;", "&")


def to_callback(server, http: requests.Session) -> str:
    """Approve button, then the sandbox's authorize: our callback URL with the code."""
    ehr = http.get(authorize_url(start_approval(server, http)), allow_redirects=False)
    assert ehr.status_code == 302, ehr.text
    return ehr.headers["Location"]


def endpoint_row(server, name: str = "sandbox") -> EhrEndpoint:
    with server.app.app_context():
        endpoint = db.session.execute(select(EhrEndpoint).filter_by(name=name)).scalar_one()
        db.session.expunge(endpoint)
        return endpoint


def approvals(server) -> list[AuditLog]:
    with server.app.app_context():
        rows = list(db.session.scalars(select(AuditLog).filter_by(action="admin.endpoint.approve")))
        for row in rows:
            db.session.expunge(row)
        return rows


def provider_launch(server, http: requests.Session) -> requests.Response:
    """The sandbox's "Start virtual visit", then our /launch (redirects not followed)."""
    ehr = http.get(f"{server.url}/sandbox/launch/provider/appt-1", allow_redirects=False)
    return http.get(ehr.headers["Location"], allow_redirects=False)


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(params)
    return urlunsplit(parts._replace(query=urlencode(query)))


def test_analyst_approves_by_signing_in_and_launches_then_work(live_server, accounts, sandbox):
    http = signed_in_session(live_server, "ana")
    clinician = new_session()
    refused = provider_launch(live_server, clinician)
    before = len(approvals(live_server))

    url = authorize_url(start_approval(live_server, http))
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    callback = http.get(url, allow_redirects=False).headers["Location"]
    done = http.get(callback, allow_redirects=False)

    assert refused.status_code == 403 and 'data-reason="unapproved_endpoint"' in refused.text
    assert url.startswith(live_server.url + "/sandbox/oauth/authorize?")
    assert query["response_type"] == "code"
    assert query["client_id"] == "virtual-visits"
    assert query["redirect_uri"] == live_server.url + "/admin/endpoints/approve/callback"
    assert query["scope"] == "openid fhirUser"
    assert query["aud"] == sandbox
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] and query["nonce"] and "launch" not in query
    assert done.status_code == 303, done.text
    assert done.headers["Location"] == "/admin/endpoints/sandbox"
    page = http.get(live_server.url + done.headers["Location"]).text
    assert "Endpoint sandbox approved by ana as Practitioner/prac-1" in page
    assert 'data-approved="true"' in page
    endpoint = endpoint_row(live_server)
    assert endpoint.approved_by == "ana as Practitioner/prac-1"
    assert endpoint.approved_at is not None
    (entry,) = approvals(live_server)[before:]
    assert entry.actor == "admin:ana" and entry.target_id == "sandbox"
    assert entry.detail["fhir_user"] == "Practitioner/prac-1"
    launched = provider_launch(live_server, clinician)
    assert launched.status_code == 302
    assert launched.headers["Location"].startswith(live_server.url + "/sandbox/oauth/authorize")


def test_admin_cannot_approve(live_server, accounts, sandbox):
    http = signed_in_session(live_server, "adam")

    response = start_approval(live_server, http)
    callback = http.get(live_server.url + "/admin/endpoints/approve/callback?code=x&state=y",
                        allow_redirects=False)
    page = http.get(live_server.url + "/admin/endpoints/sandbox").text

    assert response.status_code == 403
    assert callback.status_code == 403
    assert 'data-testid="endpoint-approve"' not in page
    assert endpoint_row(live_server).approved_at is None


def test_replayed_or_forged_callback_approves_nothing(live_server, accounts, sandbox):
    http = signed_in_session(live_server, "ana")
    callback = to_callback(live_server, http)

    forged = http.get(with_query(callback, state="forged"), allow_redirects=False)
    first = http.get(callback, allow_redirects=False)  # the forged state did not use it up
    with live_server.app.app_context():  # withdraw, then try the same answer again
        endpoint = get_endpoint("sandbox")
        endpoint.approved_by = endpoint.approved_at = None
        db.session.commit()
    replayed = http.get(callback, allow_redirects=False)

    assert forged.status_code == 400 and 'data-reason="bad_state"' in forged.text
    assert first.status_code == 303
    assert replayed.status_code == 400 and 'data-reason="bad_state"' in replayed.text
    assert endpoint_row(live_server).approved_at is None


def test_ehr_error_is_explained_and_nothing_changes(live_server, accounts, sandbox):
    http = signed_in_session(live_server, "ana")
    callback = to_callback(live_server, http)
    state = parse_qs(urlsplit(callback).query)["state"][0]
    before = len(approvals(live_server))

    response = http.get(live_server.url + "/admin/endpoints/approve/callback",
                        params={"state": state, "error": "access_denied"},
                        allow_redirects=False)

    assert response.status_code == 400
    assert 'data-reason="ehr_refused"' in response.text and "access_denied" in response.text
    assert 'role="alert"' in response.text
    assert endpoint_row(live_server).approved_at is None
    assert len(approvals(live_server)) == before


def test_forged_code_is_refused_by_the_token_endpoint(live_server, accounts, sandbox):
    http = signed_in_session(live_server, "ana")
    callback = to_callback(live_server, http)

    response = http.get(with_query(callback, code="not-a-real-code"), allow_redirects=False)

    assert response.status_code == 400
    assert 'data-reason="token_refused"' in response.text and "invalid_grant" in response.text
    assert endpoint_row(live_server).approved_at is None


def test_edit_while_signing_in_approves_nothing(live_server, accounts, sandbox):
    http = signed_in_session(live_server, "ana")
    callback = to_callback(live_server, http)
    with live_server.app.app_context():
        update_endpoint("sandbox", allowed_frame_ancestors=["https://other-ehr.example.org"])

    response = http.get(callback, allow_redirects=False)

    assert response.status_code == 409
    assert 'data-reason="endpoint_changed"' in response.text
    assert endpoint_row(live_server).approved_at is None
    with live_server.app.app_context():
        update_endpoint("sandbox", allowed_frame_ancestors=[])


def test_unreachable_ehr_gets_a_clear_page(live_server, accounts):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with live_server.app.app_context():
        add_endpoint("down", f"http://127.0.0.1:{port}/fhir", client_id="vv")
    http = signed_in_session(live_server, "ana")

    response = start_approval(live_server, http, "down")

    assert response.status_code == 503
    assert 'data-reason="ehr_unavailable"' in response.text
    assert endpoint_row(live_server, "down").approved_at is None


def test_admin_edit_after_approval_refuses_launches_again(live_server, accounts, sandbox):
    analyst = signed_in_session(live_server, "ana")
    assert analyst.get(to_callback(live_server, analyst), allow_redirects=False) \
        .status_code == 303
    admin = signed_in_session(live_server, "adam")
    page = live_server.url + "/admin/endpoints/sandbox"
    form = {"fhir_base_url": sandbox, "environment": "test", "client_id": "renamed-client",
            "scopes": "launch openid fhirUser user/*.rs", "allowed_frame_ancestors": "",
            "site_timezone": "America/Chicago", "default_phone_region": "US",
            "link_valid_after_end_minutes": "120", "lobby_opens_before_minutes": "30"}

    saved = admin.post(page, data={**form, "csrf_token": csrf_from(admin.get(page).text)})
    launch = provider_launch(live_server, new_session())

    assert saved.status_code == 200 and "The approval was withdrawn" in saved.text
    assert launch.status_code == 403 and 'data-reason="unapproved_endpoint"' in launch.text
    assert endpoint_row(live_server).approved_at is None
