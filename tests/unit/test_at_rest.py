"""Secrets kept at rest are unreadable without SECRET_KEY and bound to their purpose."""
from __future__ import annotations

import pytest
from flask import Flask

import at_rest


def _app(secret: str) -> Flask:
    app = Flask("t")
    app.config["SECRET_KEY"] = secret
    return app


def test_round_trip_and_ciphertext_hides_plaintext():
    with _app("k" * 40).app_context():
        sealed = at_rest.encrypt("eyJhbGciOi.token", "access-token")

        assert b"eyJhbGciOi" not in sealed
        assert at_rest.decrypt(sealed, "access-token") == "eyJhbGciOi.token"


def test_other_purpose_or_other_secret_cannot_read():
    with _app("k" * 40).app_context():
        sealed = at_rest.encrypt("+15555550123", "sms-phone")
        with pytest.raises(at_rest.InvalidToken):
            at_rest.decrypt(sealed, "access-token")
    with _app("z" * 40).app_context(), pytest.raises(at_rest.InvalidToken):
        at_rest.decrypt(sealed, "sms-phone")
