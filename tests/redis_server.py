"""A private ``redis-server`` a test can stop and start, for Redis outages.

Never the shared Redis (``REDIS_URL``): other tests and people use that one. This one
listens on a free loopback port, keeps nothing on disk, and is stopped at teardown.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition, timeout: float, what: str, interval: float = 0.1):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(interval)


class PrivateRedis:
    """``redis-server --port <free port>``: ``stop()`` and ``start()`` it at will."""

    def __init__(self, workdir: Path) -> None:
        if not Path(REDIS_SERVER).exists():
            pytest.fail(f"{REDIS_SERVER} is missing: `make test` installs Debian redis-server")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.log_path = workdir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1,
                           socket_timeout=1)

    def answers(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115  (the server's own, closed by it)
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while not self.answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server on port {self.port} did not start:\n"
                            f"{self.log_path.read_text(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it and wait until the port refuses connections."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)
        self.process = None
        wait_until(lambda: not self.answers(), 15, f"redis on port {self.port} to stop")

    def subscribers(self, channel: str) -> int:
        """How many connections are subscribed to ``channel`` (one per listening process)."""
        client = self.client()
        try:
            return dict(client.pubsub_numsub(channel)).get(channel.encode(), 0)
        except redis.RedisError:
            return 0
        finally:
            client.close()


@pytest.fixture
def private_redis(tmp_path):
    """A running private Redis, stopped at teardown whatever the test did to it."""
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()
