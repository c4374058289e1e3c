"""deploy/: the nginx template matches the app (body limits, static export), and the
proxy settings cover Socket.IO too. tests/stack/ boots the whole thing."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from flask_socketio import _SocketIOMiddleware
from werkzeug.middleware.proxy_fix import ProxyFix

from app import create_app
from device_test.schema import MAX_BODY_BYTES
from device_test.views import MAX_PROBE_BYTES
from hl7feed.views import HL7_MAX_BYTES
from tests.conftest import make_config

ROOT = Path(__file__).resolve().parents[2]
VALUES = {"VV_SERVER_NAME": "visits.example.org", "VV_TLS_CERTIFICATE": "/c.pem",
          "VV_TLS_CERTIFICATE_KEY": "/k.pem"}


def _render_module():
    spec = importlib.util.spec_from_file_location("render", ROOT / "deploy/nginx/render.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _nginx_size(text: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([km]?)", text).groups()
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit]


def test_template_renders_every_name_and_refuses_a_missing_one():
    render = _render_module()

    text = render.render(VALUES)

    assert "${" not in text
    assert "server_name visits.example.org;" in text
    assert "$proxy_add_x_forwarded_for" in text  # nginx's own variables are left alone
    with pytest.raises(KeyError, match="VV_SERVER_NAME"):
        render.render({k: v for k, v in VALUES.items() if k != "VV_SERVER_NAME"})


@pytest.mark.parametrize(("location", "limit"), [
    ("location /hl7/v2/", HL7_MAX_BYTES),
    ("location = /device-test/results", MAX_BODY_BYTES),
    ("location = /device-test/upload", MAX_PROBE_BYTES),
])
def test_nginx_body_limits_are_the_apps(location, limit):
    text = _render_module().render(VALUES)

    block = text[text.index(location):]
    size = re.search(r"client_max_body_size (\w+);", block[:block.index("}")]).group(1)

    assert _nginx_size(size) == limit


def _proxied_blocks(text: str):
    """Each location that passes requests to the app: (its name, its own lines)."""
    for match in re.finditer(r"location ([^{]+)\{([^}]*)\}", text):
        name, body = match.group(1).strip(), match.group(2)
        if "proxy_pass" in body:
            yield name, body


def test_every_location_that_reaches_the_app_forwards_the_client_address():
    # nginx: a location with any proxy_set_header of its own inherits none of the
    # server's; the Socket.IO location once lost the client's address that way, and the
    # join-guess limit counted every patient as nginx.
    text = _render_module().render(VALUES)
    server_lines = text[:text.index("location /")]

    for name, body in _proxied_blocks(text):
        lines = body if "proxy_set_header" in body else server_lines
        assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in lines, name
        assert "proxy_set_header X-Forwarded-Proto $scheme;" in lines, name
        assert "proxy_set_header Host $http_host;" in lines, name


def test_plain_http_redirects_to_the_configured_name_not_the_clients_host():
    text = _render_module().render(VALUES)

    assert "return 301 https://visits.example.org$request_uri;" in text
    assert "$host$request_uri" not in text


def test_proxy_fix_wraps_the_socketio_middleware_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    application = create_app(make_config(tmp_path, PROXY_COUNT=1))

    assert isinstance(application.wsgi_app, ProxyFix)
    assert isinstance(application.wsgi_app.app, _SocketIOMiddleware)


def test_static_export_holds_what_the_fingerprinted_urls_serve(app, client, runner, tmp_path):
    with app.test_request_context():
        from flask import url_for

        url = url_for("static", filename="js/call.js")
    version = url.rsplit("v=", 1)[1]

    result = runner.invoke(args=["static", "export", str(tmp_path / "export")])

    assert result.exit_code == 0, result.output
    exported = tmp_path / "export" / version / "static" / "js" / "call.js"
    served = client.get(url, headers={"Accept-Encoding": "identity"})
    assert exported.read_bytes() == served.data
    assert (exported.parent / "call.js.gz").exists()
    again = runner.invoke(args=["static", "export", str(tmp_path / "export")])
    assert "0 static files written" in again.output
