"""/admin/endpoints/<name>/integration: the values an EHR analyst enters in the EHR."""
from __future__ import annotations

import re
from html import unescape

import pytest

from tests.admin_helpers import create_account, sign_in
from tests.conftest import build_app, dispose_app

PUBLIC = "https://vv.example.org"


def field_values(html: str) -> dict[str, str]:
    """data-testid="record-<key>" -> the value shown in its read-only field."""
    found = {}
    for match in re.finditer(r'<input id="record-(\w+)" type="text" readonly value="([^"]*)"',
                             html):
        found[match.group(1)] = unescape(match.group(2))
    return found


@pytest.fixture
def admin_app(tmp_path, monkeypatch):
    """An app whose public URL is not the default, so every value must be derived from it."""
    application = build_app(tmp_path, monkeypatch, PUBLIC_BASE_URL=PUBLIC)
    with application.app_context():
        from ehr.services import ensure_endpoint

        ensure_endpoint("epic-test", "https://epic.example.org/fhir", client_id="vv-epic-123",
                        scopes="launch openid fhirUser user/*.rs", approved_by="tester",
                        frame_ancestors=["https://hyperspace.example.org"])
    create_account(application, "ada", "admin")
    create_account(application, "ann", "analyst")
    yield application
    dispose_app(application)


@pytest.mark.parametrize("username", ["ada", "ann"])
def test_both_roles_see_every_value_built_from_the_public_url(admin_app, username):
    client = admin_app.test_client()
    sign_in(client, username)

    response = client.get("/admin/endpoints/epic-test/integration")

    assert response.status_code == 200
    values = field_values(response.get_data(as_text=True))
    assert values["provider_launch_url"] == f"{PUBLIC}/launch"
    assert values["patient_launch_url"] == f"{PUBLIC}/patient/launch"
    assert values["provider_redirect_uri"] == f"{PUBLIC}/launch/callback"
    assert values["patient_redirect_uri"] == f"{PUBLIC}/patient/launch/callback"
    assert values["sms_join_base"] == f"{PUBLIC}/j/"
    assert values["device_test_url"] == f"{PUBLIC}/device-test?ctx=<context token>"
    assert values["device_test_example"].startswith(f"{PUBLIC}/device-test?ctx=")
    assert values["client_id"] == "vv-epic-123"
    assert values["jwks_url"] == f"{PUBLIC}/.well-known/jwks.json"
    assert values["hl7_url"] == f"{PUBLIC}/hl7/v2/epic-test"
    assert values["hl7_signature_header"].startswith("X-Signature: <base64")
    assert values["provider_scopes"] == "launch openid fhirUser user/*.rs"
    assert values["patient_scopes"] == "launch openid fhirUser patient/*.rs"
    assert "system/Observation.c" in values["backend_scopes"]
    assert values["frame_origins"] == "https://hyperspace.example.org"


def test_every_value_has_a_copy_button_named_for_it(admin_app):
    client = admin_app.test_client()
    sign_in(client, "ada")

    html = client.get("/admin/endpoints/epic-test/integration").get_data(as_text=True)

    labels = dict(re.findall(r'<label for="record-(\w+)">([^<]+)</label>', html))
    buttons = dict(re.findall(r'data-copy-target="record-(\w+)"\s+aria-label="([^"]+)"', html))
    assert set(buttons) == set(field_values(html)) == set(labels)
    for key, label in labels.items():
        assert buttons[key] == f"Copy {label}"
    # Without JavaScript the buttons stay hidden and the values stay selectable text.
    assert html.count('type="button" hidden data-copy-target') == len(buttons)
    assert 'role="status"' in html


def test_the_example_device_test_token_is_genuine_but_names_no_appointment(admin_app):
    from device_test.context import ContextInvalid, read_token

    client = admin_app.test_client()
    sign_in(client, "ann")
    html = client.get("/admin/endpoints/epic-test/integration").get_data(as_text=True)
    token = field_values(html)["device_test_example"].split("ctx=", 1)[1]

    with admin_app.app_context(), pytest.raises(ContextInvalid) as refused:
        read_token(admin_app.config["SECRET_KEY"], token, 3600)

    assert "do not match" in str(refused.value)  # signature fine, no such participant
    assert "ctx" in html and "valid for 7 days" in html


def test_an_endpoint_without_frame_origins_says_none_are_set(admin_app):
    with admin_app.app_context():
        from ehr.services import ensure_endpoint

        ensure_endpoint("bare", "https://bare.example.org/fhir", client_id="c", scopes="launch")
    client = admin_app.test_client()
    sign_in(client, "ada")

    html = client.get("/admin/endpoints/bare/integration").get_data(as_text=True)

    assert "frame_origins" not in field_values(html)
    assert "None yet" in html


def test_unknown_endpoint_is_404_and_signed_out_visitors_are_sent_to_sign_in(admin_app):
    client = admin_app.test_client()

    signed_out = client.get("/admin/endpoints/epic-test/integration")
    sign_in(client, "ada")
    unknown = client.get("/admin/endpoints/nope/integration")

    assert signed_out.status_code == 302 and "/admin/login" in signed_out.headers["Location"]
    assert unknown.status_code == 404
