"""Our private_key_jwt keys: rotation, the published JWKS, the CLI, and client assertions
that a strict EHR (the sandbox, over real HTTP) accepts.
"""
from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

import flask_migrate
import pytest
import requests
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import KeySet

from app import create_app
from ehr import keys
from extensions import db
from tests.conftest import make_config
from visits.models import utcnow

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture
def app(tmp_path, database_url):
    """An app on SQLite or PostgreSQL, built by the real migrations."""
    application = create_app(make_config(tmp_path, DATABASE_URL=database_url))
    with application.app_context():
        flask_migrate.upgrade()
        yield application
        db.session.remove()
        db.engine.dispose()


def _published_kids(client) -> list[str]:
    return [key["kid"] for key in client.get("/.well-known/jwks.json").get_json()["keys"]]


def test_jwks_makes_a_key_on_first_use_and_publishes_no_private_part(app, client):
    response = client.get("/.well-known/jwks.json")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "public, max-age=300"
    published = response.get_json()["keys"]
    assert len(published) == 1
    assert published[0]["alg"] == "RS384"
    assert published[0]["use"] == "sig"
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(published[0])
    assert published[0]["kid"] == KeySet.import_key_set({"keys": published}).keys[0].thumbprint()


def test_rotation_retires_the_old_key_but_keeps_it_published(app, client):
    first = keys.active_key().kid

    second = keys.rotate("ES384")

    assert second.kid != first
    assert keys.active_key().kid == second.kid
    assert _published_kids(client) == [second.kid, first]
    states = {info.kid: info.state for info in keys.list_keys()}
    assert states == {first: "retired", second.kid: "active"}


def test_a_later_rotation_purges_keys_retired_long_ago(app, client):
    oldest = keys.active_key().kid
    middle = keys.rotate(now=utcnow() - timedelta(hours=30)).kid  # oldest retired 30 h ago
    newer = keys.rotate(now=utcnow() - timedelta(hours=1)).kid  # middle retired 1 h ago

    newest = keys.rotate(retire_after=timedelta(hours=24)).kid

    assert _published_kids(client) == [newest, newer, middle]
    assert oldest not in [info.kid for info in keys.list_keys()]


def test_private_key_is_encrypted_at_rest(app):
    row = keys.active_key()
    raw = db.session.execute(
        sa.text("SELECT private_key_encrypted FROM signing_keys WHERE kid = :kid"),
        {"kid": row.kid}).scalar_one()

    assert b"PRIVATE KEY" not in bytes(raw)
    assert b"-----BEGIN" not in bytes(raw)
    # The key is usable only with the app's SECRET_KEY: decrypting works here.
    assert "PRIVATE KEY" in __import__("at_rest").decrypt(bytes(raw), "signing-key")


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_client_assertion_verifies_against_the_published_jwks(app, client, alg):
    keys.rotate(alg)

    assertion = keys.client_assertion("client-1", "https://ehr.example/token")

    published = KeySet.import_key_set(client.get("/.well-known/jwks.json").get_json())
    token = jwt.decode(assertion, published, algorithms=[alg])
    assert token.header["kid"] == keys.active_key().kid
    assert token.header["alg"] == alg
    claims = token.claims
    assert claims["iss"] == claims["sub"] == "client-1"
    assert claims["aud"] == "https://ehr.example/token"
    assert 0 < claims["exp"] - time.time() <= 300
    assert claims["iat"] <= time.time()
    assert claims["jti"] != jwt.decode(keys.client_assertion("client-1", "x"), published,
                                       algorithms=[alg]).claims["jti"]


def test_keys_cli_rotate_and_list(app, runner):
    rotated = runner.invoke(args=["keys", "rotate", "--alg", "ES384"])
    again = runner.invoke(args=["keys", "rotate"])
    listed = runner.invoke(args=["keys", "list", "--json"])

    assert rotated.exit_code == 0, rotated.output
    assert again.exit_code == 0, again.output
    rows = json.loads(listed.output)
    assert [(r["alg"], r["state"]) for r in rows] == [("RS384", "active"), ("ES384", "retired")]
    assert rows[1]["retired_at"] and rows[0]["retired_at"] is None
    text = runner.invoke(args=["keys", "list"]).output
    assert rows[0]["kid"] in text and "active" in text and "retired" in text


def test_keys_cli_refuses_an_unknown_alg(app, runner):
    result = runner.invoke(args=["keys", "rotate", "--alg", "HS256"])

    assert result.exit_code != 0


# --- against the sandbox EHR, over HTTP --------------------------------------------------

def _client_credentials(live_server, assertion: str) -> requests.Response:
    return requests.post(f"{live_server.url}/sandbox/oauth/token", data={
        "grant_type": "client_credentials", "scope": "system/AuditEvent.c",
        "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion})


def test_sandbox_token_endpoint_accepts_our_assertion_across_a_rotation(live_server):
    token_url = f"{live_server.url}/sandbox/oauth/token"
    with live_server.app.app_context():
        before = keys.client_assertion("virtual-visits", token_url)
        keys.rotate("ES384")
        after = keys.client_assertion("virtual-visits", token_url)

    accepted_before = _client_credentials(live_server, before)
    accepted_after = _client_credentials(live_server, after)

    # The sandbox fetches PUBLIC_BASE_URL/.well-known/jwks.json for each assertion: the
    # retired key still verifies the assertion signed just before the rotation.
    assert accepted_before.status_code == 200, accepted_before.text
    assert accepted_after.status_code == 200, accepted_after.text
    assert accepted_after.json()["scope"] == "system/AuditEvent.c"


def test_sandbox_rejects_an_assertion_once_its_key_is_purged(live_server):
    token_url = f"{live_server.url}/sandbox/oauth/token"
    with live_server.app.app_context():
        old = keys.client_assertion("virtual-visits", token_url)
        keys.rotate()
        keys.rotate(retire_after=timedelta(0), now=utcnow() + timedelta(seconds=1))

    response = _client_credentials(live_server, old)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


def test_assertion_for_another_client_id_is_refused(live_server):
    with live_server.app.app_context():
        assertion = keys.client_assertion(f"not-registered-{uuid.uuid4().hex[:6]}",
                                          f"{live_server.url}/sandbox/oauth/token")

    assert _client_credentials(live_server, assertion).status_code == 401
