"""Operator-facing behaviour: probes, request ids, logs without patient data, error pages."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
CLOSED_PORT = 9  # discard port: nothing listens on it here


def test_healthz_answers_without_touching_storage(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json["status"] == "ok"


def test_readyz_ok_when_database_reachable(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": "ok"}}


def test_readyz_names_database_when_down(tmp_path):
    app = create_app(make_config(
        tmp_path, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/test?connect_timeout=1"))

    response = app.test_client().get("/readyz")

    assert response.status_code == 503
    assert response.json["status"] == "unavailable"
    assert response.json["down"] == ["database"]
    assert response.json["reasons"]["database"].startswith("unreachable (")


def test_readyz_checks_redis_when_configured(tmp_path):
    app = create_app(make_config(tmp_path, REDIS_URL=REDIS_URL))

    response = app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.json["checks"] == {"database": "ok", "redis": "ok"}


def test_readyz_is_degraded_not_unavailable_when_redis_is_down(tmp_path):
    # Every process shares the one Redis: failing readiness would empty the load balancer
    # while each process can still serve (tests/integration/test_redis_outage.py).
    app = create_app(make_config(tmp_path, REDIS_URL=f"redis://127.0.0.1:{CLOSED_PORT}/0"))

    response = app.test_client().get("/readyz")

    assert response.status_code == 200
    assert response.json["status"] == "degraded"
    assert response.json["down"] == ["redis"]
    assert response.json["reasons"]["redis"].startswith("unreachable (")
    assert response.json["checks"]["database"] == "ok"


def test_request_id_is_echoed_or_made(client):
    given = client.get("/healthz", headers={"X-Request-ID": "edge-proxy-1234abcd"})
    bad = client.get("/healthz", headers={"X-Request-ID": "<script>"})

    assert given.headers["X-Request-ID"] == "edge-proxy-1234abcd"
    assert bad.headers["X-Request-ID"] != "<script>" and len(bad.headers["X-Request-ID"]) == 32


def test_access_log_has_route_pattern_not_the_path(client, caplog):
    token = "Zk3uP9-secret-join-token-value"
    caplog.set_level(logging.INFO)

    client.get(f"/j/{token}")
    client.get(f"/sandbox/fhir/Patient/{token}")

    records = [r for r in caplog.records if r.name == "virtual_visits.access"]
    assert records, "every request is logged"
    assert all(token not in repr(r.__dict__) for r in caplog.records)
    assert {r.__dict__["route"] for r in records} >= {"/j/<token>"}


def test_metrics_are_prometheus_text(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert b"vv_http_requests_total" in response.data


def test_unknown_page_is_friendly_html(client):
    response = client.get("/no-such-page")

    assert response.status_code == 404
    assert b"Page not found" in response.data
    assert b'<html lang="en">' in response.data


def test_unknown_page_is_json_when_asked(client):
    response = client.get("/no-such-page", headers={"Accept": "application/json"})

    assert response.status_code == 404
    assert response.json["status"] == 404


@pytest.mark.parametrize(("accept_language", "html_lang", "title"), [
    ("es-MX,es;q=0.9", "es", "Página no encontrada"),
    ("pt-BR,pt;q=0.9", "pt-BR", "Página não encontrada"),
    ("fr-FR", "en", "Page not found"),
])
def test_error_page_follows_browser_language(client, accept_language, html_lang, title):
    response = client.get("/no-such-page", headers={"Accept-Language": accept_language})

    assert f'<html lang="{html_lang}">'.encode() in response.data
    assert title.encode() in response.data


def test_language_switch_is_remembered(client):
    client.get("/?lang=pt-BR")

    response = client.get("/no-such-page", headers={"Accept-Language": "en"})

    assert "Página não encontrada".encode() in response.data


def test_unexpected_error_gives_friendly_500_and_logs(app, caplog):
    @app.get("/boom")
    def boom():
        raise RuntimeError("kaboom")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    response = app.test_client().get("/boom")

    assert response.status_code == 500
    assert b"Something went wrong" in response.data
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)


@pytest.mark.parametrize(("env", "reason"), [
    ({"VV_SANDBOX": "1", "VV_SECRET_KEY": "x" * 40}, "SANDBOX is on in production"),
    ({"VV_SECRET_KEY": "changeme"}, "VV_SECRET_KEY"),
    ({"VV_SECRET_KEY": "x" * 40, "VV_PUBLIC_BASE_URL": "http://visits.example.org"}, "plain http"),
])
def test_production_server_refuses_to_start_and_says_why(tmp_path, env, reason):
    environment = {k: v for k, v in os.environ.items() if not k.startswith("VV_")}
    environment.update({"VV_ENV": "production", "VV_INSTANCE_PATH": str(tmp_path),
                        "VV_PUBLIC_BASE_URL": "https://visits.example.org", **env})

    started = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=environment,
                             capture_output=True, text=True, timeout=60)

    assert started.returncode == 2
    assert reason in started.stderr
    assert len(started.stderr.strip().splitlines()) == 1
