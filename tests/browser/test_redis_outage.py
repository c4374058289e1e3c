"""Two real server processes on a private Redis that is stopped and started again: while it
is down the patient's link still opens and ``/readyz`` says "degraded"; once it is back,
python-socketio's Redis listener subscribes again and a presence change on one process
reaches a staff page on the other."""
from __future__ import annotations

import threading
import uuid
from datetime import datetime, timezone

import pytest
import requests
import socketio

from tests.browser.conftest import reschedule, start_server, stop_server
from tests.browser.test_provider_visit import patient_token
from tests.browser.test_two_processes import (  # noqa: F401  (shared_database: a fixture)
    Watcher, patient_presence, shared_database)
from tests.redis_server import wait_until

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]


class StaffPage(Watcher):
    """A provider's visit-page socket on a process other than the public URL's: the browser
    sends the public URL as its Origin, whichever process answers."""

    def __init__(self, url: str, cookies: str, appointment_id: int, origin: str):
        self.latest = None
        self.changed = threading.Condition()
        self.client = socketio.Client(reconnection=False,
                                      websocket_extra_options={"origin": origin})
        self.client.on("visit_state", self._on_state)
        self.client.on("presence", self._on_presence)
        self.client.connect(url, headers={"Cookie": cookies}, auth={"visit": appointment_id},
                            transports=["websocket"], wait_timeout=10)


def _patient(url: str, token: str, origin: str) -> socketio.Client:
    client = socketio.Client(reconnection=False, websocket_extra_options={"origin": origin})
    client.connect(url, auth={"join_token": token}, transports=["websocket"], wait_timeout=10)
    return client


@pytest.fixture
def servers_on_private_redis(tmp_path, shared_database, private_redis):
    channel = f"vv-test-{uuid.uuid4().hex[:8]}"
    shared = {
        "VV_DATABASE_URL": shared_database,
        "VV_SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.db'}",
        "VV_REDIS_URL": private_redis.url,
        "VV_REDIS_CHANNEL": channel,
    }
    first = start_server(tmp_path / "a", **shared)
    try:
        second = start_server(tmp_path / "b", public_url=first.url, **shared)
    except Exception:
        stop_server(first)
        raise
    yield first, second, channel
    for server in (first, second):
        stop_server(server)


def test_presence_crosses_processes_again_after_redis_restarts(servers_on_private_redis,
                                                                private_redis):
    first, second, channel = servers_on_private_redis
    reschedule(first, "appt-1", datetime.now(timezone.utc))
    browser = requests.Session()
    landed = browser.get(first.url + "/sandbox/launch/provider/appt-1", timeout=30)
    assert landed.status_code == 200 and "/visit/" in landed.url, landed.url
    appointment_id = int(landed.url.rsplit("/", 1)[1])
    token = patient_token(first, appointment_id)
    cookies = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    staff = StaffPage(second.url, cookies, appointment_id, origin=first.url)
    staff.wait_for(lambda s: s["appointment_id"] == appointment_id, 30)
    # Before the outage: the patient on A reaches the staff page on B through Redis.
    patient = _patient(first.url, token, origin=first.url)
    staff.wait_for(lambda s: patient_presence(s) == "connected", 30)
    patient.disconnect()
    staff.wait_for(lambda s: patient_presence(s) == "disconnected", 30)

    private_redis.stop()
    link = requests.get(f"{first.url}/j/{token}", allow_redirects=False, timeout=30)
    ready = requests.get(f"{first.url}/readyz", timeout=30)
    private_redis.start()

    assert link.status_code == 303, f"{link.status_code}\n{first.log_text()[-4000:]}"
    assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
    assert ready.json()["down"] == ["redis"]
    # Both processes' listeners subscribe again (python-socketio retries after 1, 2, 4 ... s).
    wait_until(lambda: private_redis.subscribers(channel) >= 2, 120,
               "both processes to subscribe to Redis again", interval=0.2)
    patient = _patient(first.url, token, origin=first.url)
    try:
        staff.wait_for(lambda s: patient_presence(s) == "connected", 30)
    except AssertionError:
        pytest.fail(f"presence did not cross processes after the restart\nA:\n"
                    f"{first.log_text()[-4000:]}\nB:\n{second.log_text()[-4000:]}")
    finally:
        patient.disconnect()
        staff.client.disconnect()
    assert requests.get(f"{first.url}/readyz", timeout=30).json()["status"] == "ok"
