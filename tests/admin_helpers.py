"""Helpers the admin-portal tests share: an account made as `flask admin create-user` makes
it, a form's CSRF token, and signing in through the real form, either with the Flask test
client or with a ``requests.Session`` against a live server."""
from __future__ import annotations

import re
from typing import Any

import requests
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def create_account(app_or_runner: Flask | FlaskCliRunner, name: str = "ada",
                   role: str = "admin", *extra_args: str,
                   password: str | None = PASSWORD) -> Result:
    """Run `flask admin create-user NAME --role ROLE [extra] --password PW`; it must succeed."""
    runner = (app_or_runner.test_cli_runner() if isinstance(app_or_runner, Flask)
              else app_or_runner)
    args = ["admin", "create-user", name, "--role", role, *extra_args]
    if password is not None:
        args += ["--password", password]
    result = runner.invoke(args=args)
    assert result.exit_code == 0, result.output
    return result


def csrf_from(html: str) -> str:
    """The CSRF token in a page's form (``name="csrf_token" value="..."``)."""
    match = _CSRF.search(html)
    assert match, html
    return match.group(1)


def csrf_token(client: FlaskClient, path: str = "/admin/login") -> str:
    """The CSRF token of the form on ``path``, fetched with the Flask test client."""
    return csrf_from(client.get(path).get_data(as_text=True))


def post_login(client: FlaskClient, username: str, password: str = PASSWORD,
               **extra: str) -> Any:
    """POST the sign-in form (with a fresh CSRF token) and return the response, unchecked."""
    form = {"csrf_token": csrf_token(client), "username": username, "password": password}
    form.update(extra)
    return client.post("/admin/login", data=form)


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD) -> FlaskClient:
    """Sign ``client`` in as an existing account; the form must redirect into the portal."""
    response = post_login(client, username, password)
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def sign_in_page(page: Any, base_url: str, username: str, password: str = PASSWORD,
                 lang: str | None = None) -> None:
    """Sign a Playwright ``page`` in through the real form (in ``lang``, if given); it
    must land on the portal's home."""
    page.goto(f"{base_url}/admin/login" + (f"?lang={lang}" if lang else ""))
    page.fill("#username", username)
    page.fill("#password", password)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(base_url + "/admin/")


def signed_in_client(app: Flask, role: str = "admin", name: str | None = None) -> FlaskClient:
    """A new test client signed in as a new account (``<role>-user`` unless named)."""
    name = name or f"{role}-user"
    create_account(app, name, role)
    return sign_in(app.test_client(), name)


def new_session() -> requests.Session:
    """A ``requests.Session`` that never sends loopback calls through a proxy."""
    http = requests.Session()
    http.trust_env = False
    return http


def signed_in_session(server: Any, name: str, password: str = PASSWORD) -> requests.Session:
    """A new session signed in to a live server (its URL, or anything with ``.url``)."""
    base = server if isinstance(server, str) else server.url
    http = new_session()
    response = http.post(base + "/admin/login", allow_redirects=False, data={
        "csrf_token": csrf_from(http.get(base + "/admin/login").text), "username": name,
        "password": password})
    assert response.status_code == 302, response.text
    return http
