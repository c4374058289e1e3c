"""Browser fixtures: the real server (``python app.py``, gevent) in a subprocess on a free
port, and Debian Chromium driven by Playwright with fake camera and microphone."""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
]
OUTPUT = Path(os.environ.get("VV_TEST_OUTPUT", ROOT / "test-output"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    env: dict

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def flask(self, *args: str) -> str:
        """Run a ``flask`` CLI command against this server's database; returns stdout."""
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done.stdout


def start_server(workdir: Path, *, port: int | None = None, public_url: str | None = None,
                 **env_overrides: str) -> LiveServer:
    """Migrate the database, start ``python app.py`` and wait until /healthz answers.

    Presence timings are short so tests see disconnects quickly without sleeping."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "VV_INSTANCE_PATH": str(workdir / "instance"),
        "VV_DATABASE_URL": f"sqlite:///{workdir / 'app.db'}",
        "VV_SANDBOX_DATABASE_URL": f"sqlite:///{workdir / 'sandbox.db'}",
        "VV_SANDBOX": "1",
        "VV_PORT": str(port),
        "VV_PUBLIC_BASE_URL": public_url or url,
        "VV_PRESENCE_GRACE_SECONDS": "0.3",
        "VV_PRESENCE_SWEEP_SECONDS": "0.2",
        "VV_PRESENCE_RESTART_GRACE_SECONDS": "1",
        "VV_SECRET_KEY": "browser-test-secret-key-0123456789abcdef",
        "VV_LOG_FORMAT": "json",
        **env_overrides,
    }
    env.pop("VV_ASYNC_MODE", None)  # served for real: gevent
    # As `make demo` does: migrate, then seed the sandbox and register it as an approved EHR.
    for command in (["db", "upgrade"], ["demo"]):
        done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *command],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"flask {' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    log_path = workdir / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115  (kept open for the server's lifetime)
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    server = LiveServer(url, process, log_path, env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log_text()}")
        try:
            if requests.get(f"{url}/healthz", timeout=1).ok:
                return server
        except requests.ConnectionError:
            time.sleep(0.05)  # polling for the port to open, not waiting a fixed time
    process.kill()
    raise RuntimeError(f"server did not answer /healthz within 30 s:\n{server.log_text()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def live_app(tmp_path_factory):
    """One real gevent server for the browser tests of this session; with REDIS_URL set (CI),
    Socket.IO emits go through Redis as they do with several processes."""
    extra = {"VV_REDIS_URL": os.environ["REDIS_URL"], "VV_REDIS_CHANNEL": f"vv-test-{free_port()}"} \
        if os.environ.get("REDIS_URL") else {}
    server = start_server(tmp_path_factory.mktemp("live"), **extra)
    yield server
    stop_server(server)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(locale="en-US")
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()


@pytest.fixture
def phone_page(browser):
    """A small phone screen (iPhone SE size), touch, Spanish by default."""
    context = browser.new_context(viewport={"width": 375, "height": 667}, is_mobile=True,
                                  has_touch=True, locale="es-MX")
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()


def reschedule(live_app: LiveServer, appointment_id: str, start, minutes: int = 30) -> None:
    """Move a sandbox appointment (in the sandbox's own database) so a test does not
    depend on the hour it runs at."""
    path = live_app.env["VV_SANDBOX_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        (body,) = connection.execute("SELECT body FROM sandbox_resource WHERE type = 'Appointment' "
                                     "AND id = ?", (appointment_id,)).fetchone()
        resource = json.loads(body)
        resource["start"] = start.isoformat()
        resource["end"] = (start + timedelta(minutes=minutes)).isoformat()
        connection.execute("UPDATE sandbox_resource SET body = ? WHERE type = 'Appointment' "
                           "AND id = ?", (json.dumps(resource), appointment_id))


def screenshot(page, name: str) -> Path:
    """Save a full-page screenshot under the test run's output folder."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
