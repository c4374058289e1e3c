"""Security headers of the patient's pages (never framed, never a Referer from a token's
URL), the provider's pages keeping their per-endpoint frame origins, and bad HTTP input
answered with a clear 4xx rather than a 500."""
from __future__ import annotations

import json

import pytest

from extensions import db
from tests import factories
from tests.admin_helpers import signed_in_client


@pytest.fixture
def visit(app):
    with app.app_context():
        yield factories.make_visit()


def assert_never_framed(response):
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "no-referrer"


def test_the_link_and_join_pages_are_never_framed_nor_referred(app, client, visit):
    token = factories.join_token(visit.patient)

    unknown = client.get(f"/j/not-a-real-token-{'x' * 30}")
    opened = client.get(f"/j/{token}")
    joined = client.get("/join")
    portal = client.get("/patient/launch")

    assert (unknown.status_code, opened.status_code, joined.status_code) == (404, 303, 200)
    for response in (unknown, opened, joined, portal):
        assert_never_framed(response)


def test_the_join_page_without_a_pass_is_never_framed_either(client):
    assert_never_framed(client.get("/join"))


@pytest.mark.parametrize("query", ["", "?ctx=not-a-valid-context-token", "?ctx=x&next=/join"])
def test_the_device_test_is_never_framed_and_its_token_never_referred(client, query):
    response = client.get(f"/device-test{query}")

    assert response.status_code == 200
    assert_never_framed(response)


def test_the_providers_visit_page_keeps_its_endpoints_frame_origins(app, client, visit):
    visit.appointment.endpoint.allowed_frame_ancestors = ["https://ehr.example.org"]
    db.session.commit()
    raw = factories.make_launch_session(visit.provider)
    with client.session_transaction() as session:
        session["launch_sessions"] = {str(visit.appointment.id): raw}

    response = client.get(f"/visit/{visit.appointment.id}")

    assert response.status_code == 200
    assert response.headers["Content-Security-Policy"] == \
        "frame-ancestors 'self' https://ehr.example.org"
    assert "X-Frame-Options" not in response.headers


@pytest.mark.parametrize("path", ["/launch?iss=https://unknown.example.org/fhir&launch=abc",
                                  "/launch/callback?code=secret-code&state=nope",
                                  "/sso/callback?code=secret-code&state=nope"])
def test_staff_launch_steps_with_a_token_in_the_url_send_no_referrer(client, path):
    response = client.get(path)

    assert response.status_code < 500
    assert response.headers["Referrer-Policy"] == "no-referrer"


# --- bad input: a clear 4xx -------------------------------------------------------------------

def _post_results(client, body: str):
    return client.post("/device-test/results", data=body,
                       headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("depth", [5000, 30000])  # 60 KB: within the size limit
def test_device_test_results_nested_thousands_deep_get_400(client, depth):
    response = _post_results(client, "[" * depth + "]" * depth)

    assert response.status_code == 400
    assert response.get_json() == {"ok": False, "error": "body is nested too deeply"}


def test_device_test_results_nested_deeper_than_a_result_get_400(client):
    nested = {"status": "pass"}
    for _ in range(40):
        nested = {"message": nested}

    response = _post_results(client, json.dumps({"checks": {"speaker": nested}}))

    assert response.status_code == 400
    assert response.get_json()["error"] == "body is nested too deeply"


@pytest.mark.parametrize("page", ["99999999999999999999", "9" * 5000, "-3", "0", "abc"])
def test_admin_audit_page_numbers_out_of_range_show_a_real_page(app, page):
    client = signed_in_client(app)

    response = client.get(f"/admin/audit?page={page}")

    assert response.status_code == 200
    assert 'data-testid="audit-row"' in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/admin/endpoints/clinic/certificates/{id}/remove",
                                  "/visit/{id}"])
def test_ids_in_paths_beyond_any_row_are_404_not_500(app, path):
    client = signed_in_client(app)
    with app.app_context():
        factories.make_endpoint("clinic")

    beyond = client.get(path.format(id=10**20))
    largest = client.get(path.format(id=2**63 - 1))

    assert beyond.status_code == 404
    assert largest.status_code in (403, 404)  # the visit page: no launch for it
