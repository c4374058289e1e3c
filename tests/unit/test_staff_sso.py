"""Staff single sign-on pieces that need no server: settings checks, safe redirects,
and the session helpers that decide whether a sign-in may link a launch."""
from __future__ import annotations

import re

import pytest
from flask import Flask

import settings
from settings import ConfigError
from staff_sso.oidc import StaffIdentity
from staff_sso.services import IDENTITY_KEY, SsoConfig, remember_identity, take_identity
from staff_sso.views import local_path


def config(tmp_path, **overrides):
    app = Flask("t", instance_path=str(tmp_path / "instance"))
    settings.load(app, {"SECRET_KEY": "s" * 40, "PUBLIC_BASE_URL": "https://vv.example.org",
                        **overrides})
    return app.config


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"STAFF_SSO_ISSUER": "https://login.example.org"}, "STAFF_SSO_CLIENT_ID"),
    ({"STAFF_SSO_ISSUER": "login.example.org", "STAFF_SSO_CLIENT_ID": "c"}, "http(s) URL"),
    ({"STAFF_SSO_ISSUER": "http://login.example.org", "STAFF_SSO_CLIENT_ID": "c",
      "ENV": "production"}, "plain http"),
    ({"STAFF_SSO_ISSUER": "https://login.example.org", "STAFF_SSO_CLIENT_ID": "c",
      "STAFF_SSO_SCOPES": "email"}, "openid"),
])
def test_half_configured_sign_in_is_refused_at_start(tmp_path, overrides, reason):
    with pytest.raises(ConfigError, match=re.escape(reason)):
        settings.check(config(tmp_path, **overrides))


def test_sign_in_is_off_by_default_and_on_with_issuer_and_client(tmp_path):
    off = config(tmp_path)
    on = config(tmp_path, STAFF_SSO_ISSUER="https://login.example.org", STAFF_SSO_CLIENT_ID="c",
                ENV="production")

    settings.check(off)
    settings.check(on)
    assert SsoConfig.from_mapping(off).is_configured is False
    assert SsoConfig.from_mapping(on).is_configured is True
    assert SsoConfig.from_mapping(on).scopes == "openid email profile"
    assert "secret" not in repr(SsoConfig.from_mapping({**on, "STAFF_SSO_CLIENT_SECRET": "secret"}))


@pytest.mark.parametrize(("value", "expected"), [
    ("/launch/signed-in/abc", "/launch/signed-in/abc"), ("/admin?tab=1", "/admin?tab=1"),
    (None, "/"), ("", "/"), ("https://evil.example/", "/"), ("//evil.example/", "/"),
    ("/\\evil.example", "/"), ("javascript:alert(1)", "/"),
])
def test_next_is_only_ever_a_local_path(value, expected):
    assert local_path(value) == expected


def identity(at: int) -> StaffIdentity:
    return StaffIdentity(issuer="https://login.example.org", subject="s-1", email=None,
                         name=None, authenticated_at=at)


@pytest.mark.parametrize(("signed_in_at", "usable"), [(1000, True), (999, False), (100, False)])
def test_only_a_fresh_sign_in_after_the_launch_may_link_it(signed_in_at, usable):
    session: dict = {}
    remember_identity(session, identity(signed_in_at))

    taken = take_identity(session, not_before=1000, max_age=600, now=1200)

    assert (taken is not None) is usable
    assert IDENTITY_KEY not in session
