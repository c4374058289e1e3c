"""Admin endpoint pages: the list, adding an endpoint, editing it (admins only), field
errors that keep what was typed, the audit trail, and the approval withdrawn when a
launch-relevant setting changes (so /launch is refused again)."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from ehr.models import EhrEndpoint
from ehr.services import add_endpoint, approve_endpoint
from extensions import db
from tests.admin_helpers import csrf_token, signed_in_client
from visits.models import AuditLog


@pytest.fixture
def app(app_each_db):
    return app_each_db


def valid_form(**overrides: str) -> dict[str, str]:
    form = {"name": "epic-test", "fhir_base_url": "https://FHIR.example.org/api/FHIR/R4/",
            "environment": "test", "client_id": "abc-123",
            "scopes": "launch openid fhirUser user/*.rs",
            "allowed_frame_ancestors": "https://Hyperspace.example.org\nhttps://web.example.org:8443",
            "site_timezone": "America/New_York", "default_phone_region": "ca",
            "require_staff_sso": "1", "link_valid_after_end_minutes": "90",
            "lobby_opens_before_minutes": "15"}
    form.update(overrides)
    return form


def post(client, path: str, form: dict[str, str]):
    return client.post(path, data={**form, "csrf_token": csrf_token(client, path)})


def stored(app, name: str) -> EhrEndpoint:
    with app.app_context():
        endpoint = db.session.execute(
            select(EhrEndpoint).filter_by(name=name)).scalar_one_or_none()
        if endpoint is not None:
            db.session.expunge(endpoint)
        return endpoint


def audit(app, action: str) -> list[AuditLog]:
    with app.app_context():
        rows = list(db.session.scalars(select(AuditLog).filter_by(action=f"admin.{action}")
                                       .order_by(AuditLog.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


# --- list -------------------------------------------------------------------------------

def test_home_lists_endpoints_with_approval_and_links(app):
    with app.app_context():
        add_endpoint("waiting", "https://waiting.example/fhir", client_id="c1")
        add_endpoint("live", "https://live.example/fhir", client_id="c2",
                     environment="production")
        approve_endpoint("live", by="Pat Analyst")
    client = signed_in_client(app, "analyst")

    page = client.get("/admin/").get_data(as_text=True)

    waiting = page[page.index('data-endpoint="waiting"'):]
    live = page[page.index('data-endpoint="live"'):page.index('data-endpoint="waiting"')]
    assert "Not approved" in waiting
    assert "https://waiting.example/fhir" in waiting
    assert "by Pat Analyst" in live and "UTC" in live and "production" in live
    for path in ("/admin/endpoints/live", "/admin/endpoints/live/certificates",
                 "/admin/endpoints/live/sms", "/admin/endpoints/live/integration",
                 "/admin/endpoints/live/self-test"):
        assert f'href="{path}"' in live
    assert 'data-testid="endpoint-add"' not in page  # analysts do not add endpoints


# --- create -----------------------------------------------------------------------------

def test_admin_adds_an_endpoint_normalised_unapproved_and_audited(app):
    client = signed_in_client(app)

    response = post(client, "/admin/endpoints/new", valid_form())

    assert response.status_code == 303
    assert response.headers["Location"].endswith("/admin/endpoints/epic-test")
    endpoint = stored(app, "epic-test")
    assert endpoint.fhir_base_url == "https://fhir.example.org/api/FHIR/R4"
    assert endpoint.allowed_frame_ancestors == ["https://hyperspace.example.org",
                                                "https://web.example.org:8443"]
    assert (endpoint.site_timezone, endpoint.default_phone_region) == ("America/New_York", "CA")
    assert endpoint.require_staff_sso is True
    assert (endpoint.link_valid_after_end_minutes, endpoint.lobby_opens_before_minutes) == \
        (90, 15)
    assert endpoint.is_approved is False
    (entry,) = audit(app, "endpoint.create")
    assert (entry.actor, entry.target_type, entry.target_id) == \
        ("admin:admin-user", "endpoint", "epic-test")
    assert entry.detail["values"]["client_id"] == "abc-123"
    assert "fhir_base_url" in entry.detail["changed"]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Endpoint epic-test added" in page
    assert 'data-approved="false"' in page


@pytest.mark.parametrize(("field", "value"), [
    ("name", "Bad Name"),
    ("name", "new"),  # /admin/endpoints/new is the form
    ("fhir_base_url", "http://ehr.example.org/fhir"),
    ("fhir_base_url", "https://ehr.example.org/fhir?x=1"),
    ("client_id", ""),
    ("scopes", "openid fhirUser"),
    ("allowed_frame_ancestors", "https://ehr.example.org/path"),
    ("allowed_frame_ancestors", "ehr.example.org"),
    ("site_timezone", "Mars/Olympus"),
    ("default_phone_region", "XX"),
    ("link_valid_after_end_minutes", "-5"),
    ("lobby_opens_before_minutes", "soon"),
    ("environment", "staging"),
])
def test_bad_field_is_explained_next_to_it_and_nothing_is_lost(app, field, value):
    client = signed_in_client(app)
    form = valid_form(**{field: value})

    response = post(client, "/admin/endpoints/new", form)

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'role="alert"' in page and 'data-testid="form-errors"' in page
    assert f'data-field="{field}"' in page
    assert f'aria-describedby="{field}-help {field}-error"' in page \
        or f'aria-describedby="{field}-error"' in page
    assert 'aria-invalid="true"' in page
    assert 'value="abc-123"' in page or field == "client_id"  # the rest is kept
    assert "America/New_York" in page or field == "site_timezone"
    assert stored(app, "epic-test") is None
    assert audit(app, "endpoint.create") == []


def test_duplicate_fhir_base_names_the_existing_endpoint(app):
    with app.app_context():
        add_endpoint("first", "https://fhir.example.org/api/FHIR/R4", client_id="c")
    client = signed_in_client(app)

    response = post(client, "/admin/endpoints/new", valid_form())
    duplicate_name = post(client, "/admin/endpoints/new",
                          valid_form(name="first", fhir_base_url="https://other.example/fhir"))

    assert response.status_code == 400
    assert "already registered as first" in response.get_data(as_text=True)
    assert duplicate_name.status_code == 400
    assert "An endpoint named first already exists" in duplicate_name.get_data(as_text=True)


def test_analyst_cannot_create_or_edit(app):
    with app.app_context():
        add_endpoint("epic-test", "https://fhir.example.org/fhir", client_id="c")
    client = signed_in_client(app, "analyst")

    new_page = client.get("/admin/endpoints/new")
    created = post(client, "/admin/endpoints/epic-test", valid_form())  # token from detail
    detail = client.get("/admin/endpoints/epic-test").get_data(as_text=True)

    assert new_page.status_code == 403
    assert created.status_code == 403
    assert 'data-testid="endpoint-form"' not in detail
    assert "Only an admin account can change these settings." in detail
    assert "https://fhir.example.org/fhir" in detail
    assert stored(app, "epic-test").client_id == "c"


def test_signed_out_visitor_is_sent_to_sign_in(app):
    response = app.test_client().get("/admin/endpoints/new")

    assert response.status_code == 302
    assert "/admin/login" in response.headers["Location"]


# --- edit -------------------------------------------------------------------------------

def test_editing_a_launch_field_withdraws_the_approval_and_says_so(app):
    with app.app_context():
        add_endpoint("epic-test", "https://fhir.example.org/api/FHIR/R4", client_id="abc-123")
        approve_endpoint("epic-test", by="Pat Analyst")
    client = signed_in_client(app)
    form = valid_form(client_id="new-client")
    form.pop("name")

    response = post(client, "/admin/endpoints/epic-test", form)

    assert response.status_code == 303
    endpoint = stored(app, "epic-test")
    assert endpoint.client_id == "new-client"
    assert (endpoint.approved_by, endpoint.approved_at) == (None, None)
    page = client.get("/admin/endpoints/epic-test").get_data(as_text=True)
    assert "The approval was withdrawn" in page
    assert 'data-approved="false"' in page
    (update,) = audit(app, "endpoint.update")
    assert "client_id" in update.detail["changed"]
    assert update.detail["values"]["client_id"] == "new-client"
    assert update.detail["approval_cleared"] is True
    (cleared,) = audit(app, "endpoint.approval_cleared")
    assert cleared.detail["previously_approved_by"] == "Pat Analyst"
    assert "client_id" in cleared.detail["because"]


def test_editing_other_settings_keeps_the_approval(app):
    with app.app_context():
        add_endpoint("epic-test", "https://fhir.example.org/api/FHIR/R4", client_id="abc-123",
                     scopes="launch openid fhirUser user/*.rs",
                     frame_ancestors=["https://hyperspace.example.org",
                                      "https://web.example.org:8443"])
        approve_endpoint("epic-test", by="Pat Analyst")
    client = signed_in_client(app)
    form = valid_form(site_timezone="Europe/Paris", lobby_opens_before_minutes="45")
    form.pop("name")

    response = post(client, "/admin/endpoints/epic-test", form)

    assert response.status_code == 303
    endpoint = stored(app, "epic-test")
    assert endpoint.approved_by == "Pat Analyst"
    assert (endpoint.site_timezone, endpoint.lobby_opens_before_minutes) == ("Europe/Paris", 45)
    (update,) = audit(app, "endpoint.update")
    assert update.detail["approval_cleared"] is False
    assert "client_id" not in update.detail["changed"]
    assert audit(app, "endpoint.approval_cleared") == []


def test_name_cannot_be_changed(app):
    with app.app_context():
        add_endpoint("epic-test", "https://fhir.example.org/fhir", client_id="c")
    client = signed_in_client(app)

    post(client, "/admin/endpoints/epic-test", valid_form(name="renamed"))

    assert stored(app, "renamed") is None
    assert stored(app, "epic-test").client_id == "abc-123"


def test_edit_error_keeps_typed_values_and_changes_nothing(app):
    with app.app_context():
        add_endpoint("epic-test", "https://fhir.example.org/fhir", client_id="c")
        approve_endpoint("epic-test", by="Pat")
    client = signed_in_client(app)
    form = valid_form(client_id="typed-client", site_timezone="Nowhere/City")
    form.pop("name")

    response = post(client, "/admin/endpoints/epic-test", form)

    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert 'value="typed-client"' in page and 'value="Nowhere/City"' in page
    assert 'data-field="site_timezone"' in page
    endpoint = stored(app, "epic-test")
    assert endpoint.client_id == "c" and endpoint.approved_by == "Pat"


def test_unknown_endpoint_is_404(app):
    client = signed_in_client(app)

    assert client.get("/admin/endpoints/nope").status_code == 404


# --- the CLI shares the rules ----------------------------------------------------------

def test_cli_added_endpoint_edits_in_the_admin(app):
    runner = app.test_cli_runner()
    added = runner.invoke(args=["endpoints", "add", "cli-made", "https://cli.example/fhir",
                                "--client-id", "c"])
    approved = runner.invoke(args=["endpoints", "approve", "cli-made", "--by", "cli"])
    client = signed_in_client(app)
    form = valid_form(fhir_base_url="https://cli.example/fhir", client_id="c",
                      scopes="launch openid fhirUser user/*.rs", environment="production")
    form.pop("name")

    post(client, "/admin/endpoints/cli-made", form)
    listed = runner.invoke(args=["endpoints", "list"])

    assert added.exit_code == 0 and approved.exit_code == 0
    assert "NOT APPROVED" in listed.output  # environment changed: approve again
    assert "production" in listed.output
