"""The signed-cookie session keeps cookies it already checked (extensions.py): a repeat
is not verified again, yet a tampered or expired cookie is still refused and one
request's changes never reach another."""
from __future__ import annotations

from datetime import timedelta
from unittest import mock

from flask import Flask, session

from extensions import CachedSigningSessionInterface


def _app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "test-secret-" + "x" * 32
    app.session_interface = CachedSigningSessionInterface()
    app.permanent_session_lifetime = timedelta(hours=1)

    @app.post("/set")
    def set_pass():
        session["pass"] = {"participant": 7, "tags": ["a"]}
        return "ok"

    @app.get("/read")
    def read():
        held = session.get("pass")
        if held:
            held["tags"].append("changed by this request")  # must not leak to the next
        return {"pass": session.get("pass")}

    return app


def _cookie(app: Flask) -> str:
    client = app.test_client()
    client.post("/set")
    return client.get_cookie("session").value


def test_a_repeated_cookie_is_verified_once_and_reads_the_same():
    app = _app()
    cookie = _cookie(app)
    client = app.test_client()
    client.set_cookie("session", cookie)
    signer = app.session_interface.get_signing_serializer(app)

    with mock.patch.object(signer, "loads", wraps=signer.loads) as verified:
        first = client.get("/read").json
        second = client.get("/read").json

    assert verified.call_count == 1
    assert first["pass"]["tags"] == second["pass"]["tags"] == ["a", "changed by this request"]


def test_a_tampered_cookie_is_refused_even_after_the_real_one_was_kept():
    app = _app()
    cookie = _cookie(app)
    client = app.test_client()
    client.set_cookie("session", cookie)
    assert client.get("/read").json["pass"]["participant"] == 7

    client.set_cookie("session", cookie[:-2] + ("AA" if cookie[-2:] != "AA" else "BB"))

    assert client.get("/read").json == {"pass": None}


def test_a_kept_cookie_still_expires():
    app = _app()
    cookie = _cookie(app)
    client = app.test_client()
    client.set_cookie("session", cookie)
    assert client.get("/read").json["pass"] is not None

    with mock.patch("extensions.time.time", return_value=__import__("time").time() + 7200):
        expired = client.get("/read").json

    assert expired == {"pass": None}
