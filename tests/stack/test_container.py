"""The container image (deploy/Dockerfile), where a container engine runs.

Builds the image and smoke-tests it as the stack test does gunicorn: on the host's
network, against a PostgreSQL database made for it and a private Redis, migrations and
the sandbox through the same `flask` commands, run inside the image as its non-root
user; then its HEALTHCHECK must turn healthy and a provider launch from the sandbox must
open the visit page. Where neither `docker info` nor `podman info` succeeds (no engine
running, as on the machine this was written on), the test is skipped with the reason.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import uuid

import pytest
import requests

from tests.browser.conftest import free_port
from tests.redis_server import PrivateRedis, wait_until
from tests.stack.conftest import ROOT, create_database

pytestmark = pytest.mark.timeout(900)


def _engine() -> tuple[str | None, str]:
    """The first engine that answers, or None and why none did."""
    reasons = []
    for name in ("docker", "podman"):
        path = shutil.which(name)
        if path is None:
            reasons.append(f"{name}: not installed")
            continue
        try:
            done = subprocess.run([path, "info"], capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            reasons.append(f"{name} info: no answer within 30 s")
            continue
        if done.returncode == 0:
            return path, ""
        last = (done.stderr or done.stdout).strip().splitlines()
        reasons.append(f"{name} info: {last[-1] if last else f'exit {done.returncode}'}")
    return None, "; ".join(reasons)


def _run(*command: str, timeout: float = 120) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def test_image_builds_migrates_and_serves_a_launch(tmp_path):
    engine, reason = _engine()
    if engine is None:
        print(f"container test skipped: {reason}")
        pytest.skip(f"no container engine runs here ({reason})")
    image = f"virtual-visits-test:{uuid.uuid4().hex[:8]}"
    _run(engine, "build", "-f", str(ROOT / "deploy" / "Dockerfile"), "-t", image, str(ROOT),
         timeout=900)
    database_url, drop_database = create_database()
    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    port = free_port()
    env = {"VV_ENV": "development", "VV_SANDBOX": "1", "VV_SANDBOX_FIRST_VISIT": "now",
           "VV_DATABASE_URL": database_url, "VV_SANDBOX_DATABASE_URL": database_url,
           "VV_REDIS_URL": redis_server.url, "VV_PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
           "VV_PROXY_COUNT": "0", "VV_BIND": f"127.0.0.1:{port}",
           "VV_SECRET_KEY": "container-test-secret-key-0123456789abcdef"}
    flags = [flag for key, value in env.items() for flag in ("-e", f"{key}={value}")]
    name = f"vv-container-test-{uuid.uuid4().hex[:8]}"
    try:
        for command in (["db", "upgrade"], ["demo"]):
            _run(engine, "run", "--rm", "--network", "host", *flags, image,
                 "flask", "--app", "app", *command)
        _run(engine, "run", "-d", "--name", name, "--network", "host", *flags, image)

        def healthy() -> bool:
            state = subprocess.run([engine, "inspect", "-f", "{{.State.Health.Status}}", name],
                                   capture_output=True, text=True, timeout=30).stdout.strip()
            return state == "healthy"

        wait_until(healthy, 120, "the image's HEALTHCHECK to report healthy")
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/readyz", timeout=10).json()["status"] == "ok"
        landed = requests.Session().get(f"{base}/sandbox/launch/provider/appt-1", timeout=30)
        assert landed.status_code == 200 and re.search(r"/visit/\d+$", landed.url), landed.url
        user = _run(engine, "exec", name, "id", "-u").strip()
        assert user != "0", "the app runs as root in the image"
    finally:
        logs = subprocess.run([engine, "logs", name], capture_output=True, text=True,
                              timeout=30)
        (tmp_path / "container.log").write_text(logs.stdout + logs.stderr)
        subprocess.run([engine, "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run([engine, "rmi", "-f", image], capture_output=True, timeout=120)
        redis_server.stop()
        drop_database()

