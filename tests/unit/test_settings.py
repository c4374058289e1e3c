"""Configuration: defaults, the VV_ environment, and production refusals."""
from __future__ import annotations

import os
import stat

import pytest
from flask import Flask

import settings
from settings import ConfigError

STRONG_SECRET = "s" * 40


def load(tmp_path, env: dict | None = None, monkeypatch=None, **overrides):
    app = Flask("t", instance_path=str(tmp_path / "instance"))
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    settings.load(app, overrides)
    return app.config


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("VV_"):
            monkeypatch.delenv(name)


def test_defaults_are_sqlite_in_instance_no_redis_gevent(tmp_path):
    config = load(tmp_path)

    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/instance/virtual-visits.db"
    assert config["REDIS_URL"] is None
    assert config["ASYNC_MODE"] == "gevent"
    assert config["SANDBOX"] is False
    assert config["PUBLIC_BASE_URL"] == "http://127.0.0.1:5000"


def test_environment_prefix_is_read_and_typed(tmp_path, monkeypatch):
    config = load(tmp_path, {"VV_SANDBOX": "true", "VV_PORT": "8123",
                             "VV_DATABASE_URL": "postgresql://u@db/vv",
                             "VV_REDIS_URL": "redis://127.0.0.1:6379/0"}, monkeypatch)

    assert config["SANDBOX"] is True
    assert config["PORT"] == 8123
    assert config["PUBLIC_BASE_URL"] == "http://127.0.0.1:8123"
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/vv"
    assert config["REDIS_URL"] == "redis://127.0.0.1:6379/0"


def test_test_mapping_overrides_environment(tmp_path, monkeypatch):
    config = load(tmp_path, {"VV_LOG_LEVEL": "debug"}, monkeypatch, LOG_LEVEL="warning")

    assert config["LOG_LEVEL"] == "WARNING"


def test_bad_value_names_the_variable(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="VV_SANDBOX"):
        load(tmp_path, {"VV_SANDBOX": "maybe"}, monkeypatch)


def test_development_secret_is_generated_once_and_private(tmp_path):
    first = load(tmp_path)["SECRET_KEY"]
    second = load(tmp_path)["SECRET_KEY"]

    secret_file = tmp_path / "instance" / "secret_key"
    assert first == second and len(first) >= 32
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600


def test_production_does_not_generate_a_secret(tmp_path):
    config = load(tmp_path, ENV="production", PUBLIC_BASE_URL="https://vv.example.org")

    assert config["SECRET_KEY"] is None
    assert not (tmp_path / "instance" / "secret_key").exists()


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"SANDBOX": True, "SECRET_KEY": STRONG_SECRET}, "SANDBOX is on in production"),
    ({"SECRET_KEY": None}, "VV_SECRET_KEY"),
    ({"SECRET_KEY": "changeme"}, "VV_SECRET_KEY"),
    ({"SECRET_KEY": "short-but-not-default"}, "at least 32 characters"),
    ({"SECRET_KEY": STRONG_SECRET, "PUBLIC_BASE_URL": "http://vv.example.org"}, "plain http"),
])
def test_production_refuses_unsafe_settings_in_one_line(tmp_path, overrides, reason):
    config = load(tmp_path, ENV="production", **{"PUBLIC_BASE_URL": "https://vv.example.org",
                                                  **overrides})

    with pytest.raises(ConfigError, match=reason) as refused:
        settings.check(config)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("public_url", ["https://vv.example.org", "http://127.0.0.1:5000",
                                        "http://localhost:8080", "http://[::1]:5000"])
def test_production_accepts_https_or_loopback(tmp_path, public_url):
    config = load(tmp_path, ENV="production", SECRET_KEY=STRONG_SECRET, PUBLIC_BASE_URL=public_url)

    settings.check(config)


def test_every_setting_is_documented():
    documented = open(os.path.join(os.path.dirname(settings.__file__), "docs",
                                   "configuration.md"), encoding="utf-8").read()

    assert settings.markdown_table() in documented, "run `python settings.py` into docs/configuration.md"


def test_behind_https_the_session_cookie_survives_a_cross_site_ehr_frame(tmp_path):
    """SameSite=None (sent in the EHR's frame), Secure, and Partitioned (CHIPS) so a browser
    that blocks third-party cookies still keeps it there; plain http keeps Lax."""
    def session_cookie(public_url: str) -> str:
        from app import create_app

        app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
                          "PUBLIC_BASE_URL": public_url})

        @app.get("/_touch_session")
        def touch():
            from flask import session
            session["seen"] = True
            return "ok"

        return app.test_client().get("/_touch_session").headers["Set-Cookie"]

    framed = session_cookie("https://visits.example.org")
    assert "SameSite=None" in framed and "Secure" in framed and "Partitioned" in framed
    local = session_cookie("http://127.0.0.1:5000")
    assert "SameSite=Lax" in local and "Partitioned" not in local and "Secure" not in local


@pytest.mark.parametrize("public_url", ["https://visits.example.org", "https://127.0.0.1:8443",
                                        "http://127.0.0.1:5000", "http://localhost:5000"])
def test_the_session_cookie_is_partitioned_exactly_when_it_is_samesite_none(tmp_path,
                                                                            public_url):
    """A SameSite=None cookie is a third-party cookie in the EHR's frame: without
    Partitioned, browsers that block those drop it and the launch fails there."""
    config = load(tmp_path, PUBLIC_BASE_URL=public_url)

    cross_site = config["SESSION_COOKIE_SAMESITE"] == "None"
    assert config["SESSION_COOKIE_PARTITIONED"] is cross_site
    assert cross_site is public_url.startswith("https://")
