"""Integration fixtures that need real HTTP: the app served by werkzeug in a thread, and a
tiny JWKS server standing in for a SMART client's published keys.

The sandbox EHR fetches a client's JWKS over HTTP while answering the token request,
so the app must really listen (threaded, so that request can be served concurrently).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from joserfc.jwk import ECKey, RSAKey
from werkzeug.serving import BaseWSGIServer, make_server

from app import create_app
from extensions import db
from sandbox_ehr import idp
from sandbox_ehr.models import SandboxLaunch
from tests.conftest import make_config, seed_sandbox
from tests.local_http import JsonHandler, serving


@dataclass
class LiveServer:
    """A running app: ``url`` is its PUBLIC_BASE_URL; use ``app`` for app-context work."""

    url: str
    app: Flask


def use_sandbox_idp(server: LiveServer, client_id: str, secret: str) -> None:
    """Point the app's staff sign-in at the sandbox's OpenID provider (``/sandbox/idp``)
    and register the app there as ``client_id``."""
    server.app.config.update(STAFF_SSO_ISSUER=server.url + "/sandbox/idp",
                             STAFF_SSO_CLIENT_ID=client_id, STAFF_SSO_CLIENT_SECRET=secret)
    with server.app.app_context():
        assert idp.register_demo_client() is not None


def _placeholder(environ, start_response):  # pragma: no cover - replaced before serving
    start_response("503 Service Unavailable", [])
    return [b""]


@pytest.fixture(scope="module")
def live_server_config() -> dict[str, Any]:
    """Extra settings for ``live_server``; override this fixture in a test module."""
    return {}


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, live_server_config) -> Iterator[LiveServer]:
    """The app on a free loopback port for the module's tests.

    The socket is bound first (port 0) and the app built afterwards, so PUBLIC_BASE_URL
    names the real port without a find-then-bind race.
    """
    tmp_path = tmp_path_factory.mktemp("live")
    server: BaseWSGIServer = make_server("127.0.0.1", 0, _placeholder, threaded=True)
    url = f"http://127.0.0.1:{server.port}"
    app = create_app(make_config(tmp_path, PUBLIC_BASE_URL=url, **live_server_config))
    with app.app_context():
        db.create_all()
    if app.config["SANDBOX"]:
        seed_sandbox(app)
    server.app = app
    # A short poll interval makes shutdown() return promptly at teardown.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01},
                              name="live-server", daemon=True)
    thread.start()
    yield LiveServer(url=url, app=app)
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@dataclass
class JwksServer:
    """Serves ``{"keys": [...]}`` for ``keys`` at ``url``; tests may change ``keys``."""

    url: str
    rsa_key: RSAKey
    ec_key: ECKey
    keys: list[dict[str, Any]] = field(default_factory=list)
    requests: int = 0


@pytest.fixture(scope="session")
def client_signing_keys() -> tuple[RSAKey, ECKey]:
    """A test client's RSA and EC P-384 keys (made once: RSA generation is slow)."""
    rsa = RSAKey.generate_key(2048, parameters={"kid": "test-rsa"}, private=True)
    ec = ECKey.generate_key("P-384", parameters={"kid": "test-ec"}, private=True)
    return rsa, ec


@pytest.fixture
def client_jwks_server(client_signing_keys) -> Iterator[JwksServer]:
    """A client's JWKS endpoint (public RSA and EC keys) on a free loopback port."""
    rsa, ec = client_signing_keys
    state = JwksServer(url="", rsa_key=rsa, ec_key=ec,
                       keys=[rsa.as_dict(private=False), ec.as_dict(private=False)])

    class Handler(JsonHandler):
        def do_GET(self):  # noqa: N802  (http.server's naming)
            state.requests += 1
            if self.path != "/jwks.json":
                self.send_error(404)
                return
            self.send_json(200, {"keys": state.keys})

    with serving(Handler) as base:
        state.url = base + "/jwks.json"
        yield state


class SmartFlow:
    """Drives the sandbox EHR the way a SMART app does, one step at a time, over HTTP.

    Each instance registers its own client id, so assertion ids and codes from one test
    can never collide with another's on the shared live server.
    """

    def __init__(self, server: LiveServer, jwks: JwksServer) -> None:
        import uuid

        import requests

        self.server = server
        self.jwks = jwks
        self.http = requests.Session()
        self.http.trust_env = False  # never route loopback calls through a proxy
        self.client_id = f"test-{uuid.uuid4().hex[:12]}"
        self.secret: str | None = None
        self.fhir_base = server.url + "/sandbox/fhir"
        self.authorize_url = server.url + "/sandbox/oauth/authorize"
        self.token_url = server.url + "/sandbox/oauth/token"
        self.redirect_uri = server.url + "/test/callback"

    def register(self, *, secret: str | None = None, jwks: bool = True) -> SmartFlow:
        from sandbox_ehr.clients import register_client

        self.secret = secret
        with self.server.app.app_context():
            register_client(self.client_id, redirect_uris=[self.redirect_uri],
                            jwks_url=self.jwks.url if jwks else None, secret=secret,
                            name="Test app")
        return self

    def launch(self, audience: str = "provider", appointment_id: str = "appt-1") -> str:

        response = self.http.get(f"{self.server.url}/sandbox/launch/{audience}/{appointment_id}",
                                 allow_redirects=False)
        assert response.status_code == 302, response.text
        return parse_qs(urlsplit(response.headers["Location"]).query)["launch"][0]

    @staticmethod
    def pkce() -> tuple[str, str]:
        import base64
        import hashlib
        import secrets

        verifier = secrets.token_urlsafe(48)
        digest = hashlib.sha256(verifier.encode()).digest()
        return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def authorize(self, *, launch: str | None = None, challenge: str | None = None,
                  **overrides: str | None):
        """GET the authorize endpoint without following the redirect; None drops a param."""
        params: dict[str, str | None] = {
            "response_type": "code", "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "scope": ("launch openid fhirUser user/*.rs user/Observation.c user/AuditEvent.c "
                      "user/Communication.c"),
            "state": "state-123", "aud": self.fhir_base,
            "launch": launch if launch is not None else self.launch(),
            "code_challenge": challenge or self.pkce()[1], "code_challenge_method": "S256",
            "nonce": "nonce-456",
        }
        params.update(overrides)
        return self.http.get(self.authorize_url, allow_redirects=False,
                             params={k: v for k, v in params.items() if v is not None})

    def code(self, **overrides: str | None) -> tuple[str, str]:
        """A fresh authorization code and its PKCE verifier."""

        verifier, challenge = self.pkce()
        response = self.authorize(challenge=challenge, **overrides)
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["Location"]).query)
        assert "code" in query, query
        return query["code"][0], verifier

    def assertion(self, *, key: Any = None, alg: str = "RS384", kid: str | None = "default",
                  **claims: Any) -> str:
        import time
        import uuid

        from joserfc import jwt

        key = key or (self.jwks.ec_key if alg.startswith("ES") else self.jwks.rsa_key)
        now = int(time.time())
        body = {"iss": self.client_id, "sub": self.client_id, "aud": self.token_url,
                "exp": now + 240, "iat": now, "jti": uuid.uuid4().hex}
        body.update(claims)
        header = {"alg": alg, "typ": "JWT"}
        if kid == "default":
            kid = key.kid
        if kid:
            header["kid"] = kid
        return jwt.encode(header, {k: v for k, v in body.items() if v is not None}, key,
                          algorithms=[alg])

    def token(self, code: str, verifier: str, /, *, assertion: str | None = None,
              basic: tuple[str, str] | None = None, **overrides: str | None):
        form: dict[str, str | None] = {
            "grant_type": "authorization_code", "code": code,
            "redirect_uri": self.redirect_uri, "code_verifier": verifier,
        }
        auth = None
        if basic is not None:
            auth = basic
        else:
            form["client_assertion_type"] = ("urn:ietf:params:oauth:client-assertion-type:"
                                             "jwt-bearer")
            form["client_assertion"] = assertion or self.assertion()
        form.update(overrides)
        return self.http.post(self.token_url, auth=auth,
                              data={k: v for k, v in form.items() if v is not None})

    def access_token(self, **authorize_overrides: str | None) -> dict[str, Any]:
        code, verifier = self.code(**authorize_overrides)
        response = self.token(code, verifier)
        assert response.status_code == 200, response.text
        return response.json()

    def fhir(self, method: str, path: str, token: str | None = None, **kwargs: Any):
        headers = dict(kwargs.pop("headers", {}))
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, f"{self.fhir_base}/{path}", headers=headers, **kwargs)


@pytest.fixture
def smart(live_server, client_jwks_server) -> SmartFlow:
    """A registered private_key_jwt test client, ready to launch, authorize and exchange."""
    return SmartFlow(live_server, client_jwks_server).register()


def change_launch_context(server, launch_url: str, **changes) -> None:
    """Edit what the sandbox EHR will put in the token response for this launch."""
    launch_id = parse_qs(urlsplit(launch_url).query)["launch"][0]
    with server.app.app_context():
        row = db.session.get(SandboxLaunch, launch_id)
        context = dict(row.context)
        for key, value in changes.items():
            if value is None:
                context.pop(key, None)
            else:
                context[key] = value
        row.context = context
        db.session.commit()
