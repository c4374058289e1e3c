"""Two server processes behind one public URL share events through real Redis and
presence through the shared database: a provider on one sees a patient on the other,
and when a process dies its patients turn disconnected on the survivor. A patient who
opens the visit again on the other process continues there (the older page is told), and
reads the chat said so far, whichever process took it."""
from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest
import requests
import socketio

from tests.browser.conftest import free_port, reschedule, start_server, stop_server
from tests.browser.test_provider_visit import patient_token
from tests.conftest import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.browser

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def shared_database(tmp_path):
    """PostgreSQL (its own schema) when DATABASE_URL is set, else one SQLite file."""
    if not POSTGRES_URL:
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def two_servers(tmp_path, shared_database):
    port_a = free_port()
    shared = {
        "VV_DATABASE_URL": shared_database,
        "VV_SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.db'}",
        "VV_REDIS_URL": REDIS_URL,
        "VV_REDIS_CHANNEL": f"vv-test-{uuid.uuid4().hex[:8]}",
        "VV_PROCESS_TIMEOUT_SECONDS": "2",
    }
    first = start_server(tmp_path / "a", port=port_a, **shared)
    second = start_server(tmp_path / "b", public_url=first.url, **shared)
    yield first, second
    for server in (first, second):
        stop_server(server)


class Watcher:
    """A provider's visit-page socket, keeping what the page shows: the latest visit_state
    with the presence deltas since applied."""

    def __init__(self, url: str, cookies: str, appointment_id: int):
        self.latest: dict | None = None
        self.changed = threading.Condition()
        self.client = socketio.Client(reconnection=False)
        self.client.on("visit_state", self._on_state)
        self.client.on("presence", self._on_presence)
        self.client.connect(url, headers={"Cookie": cookies}, auth={"visit": appointment_id},
                            transports=["websocket"], wait_timeout=5)

    def _on_state(self, state):
        with self.changed:
            self.latest = state
            self.changed.notify_all()

    def _on_presence(self, delta):
        with self.changed:
            for person in (self.latest or {}).get("participants", []):
                if person["id"] == delta["participant_id"]:
                    person["presence"] = delta["presence"]
            self.changed.notify_all()

    def wait_for(self, predicate, timeout: float) -> float:
        """Seconds until ``predicate(latest)`` held; fails after ``timeout``."""
        started = time.monotonic()
        with self.changed:
            ok = self.changed.wait_for(lambda: self.latest and predicate(self.latest), timeout)
        assert ok, f"not within {timeout} s: {self.latest}"
        return time.monotonic() - started


def patient_presence(state) -> str:
    return next(p["presence"] for p in state["participants"] if p["role"] == "patient")


def provider_on(server, sandbox_id: str) -> tuple[Watcher, int]:
    """The visit launched from the sandbox (moved to now: its join links would otherwise
    expire two hours after the seeded 09:00 visit), its provider's page on ``server``."""
    reschedule(server, sandbox_id, datetime.now(timezone.utc))
    browser = requests.Session()
    landed = browser.get(f"{server.url}/sandbox/launch/provider/{sandbox_id}", timeout=10)
    assert landed.status_code == 200 and "/visit/" in landed.url, landed.url
    appointment_id = int(landed.url.rsplit("/", 1)[1])
    cookies = "; ".join(f"{c.name}={c.value}" for c in browser.cookies)
    provider = Watcher(server.url, cookies, appointment_id)
    provider.wait_for(lambda s: s["appointment_id"] == appointment_id, 5)
    return provider, appointment_id


def test_provider_on_one_process_sees_patient_on_the_other(two_servers):
    first, second = two_servers
    provider, appointment_id = provider_on(first, "appt-1")
    admitted = threading.Event()
    # Behind the shared public URL a browser's Origin is that URL, whichever process answers.
    patient = socketio.Client(reconnection=False,
                              websocket_extra_options={"origin": first.url})
    patient.on("lobby_state", lambda s: s["state"] == "admitted" and admitted.set())

    patient.connect(second.url, auth={"join_token": patient_token(first, appointment_id)},
                    transports=["websocket"], wait_timeout=5)

    assert provider.wait_for(lambda s: patient_presence(s) == "connected", 1.0) < 1.0
    patient_id = next(p["id"] for p in provider.latest["participants"] if p["role"] == "patient")
    assert provider.client.call("admit", {"participant_id": patient_id}, timeout=5)["ok"]
    assert admitted.wait(2), "the admit on process A reached the patient on process B"

    second.process.kill()  # no goodbye: the sockets it held must be cleared by process A

    waited = provider.wait_for(lambda s: patient_presence(s) == "disconnected", 30)
    assert waited < 30
    provider.client.disconnect()


def test_a_second_tab_on_the_other_process_takes_over_and_reads_the_chat(two_servers):
    first, second = two_servers
    provider, appointment_id = provider_on(first, "appt-2")
    token = patient_token(first, appointment_id)
    replaced, admitted = threading.Event(), threading.Event()
    tab = socketio.Client(reconnection=False, websocket_extra_options={"origin": first.url})
    tab.on("lobby_state", lambda s: s["state"] == "admitted" and admitted.set())
    # What the page does on "replaced": say so, and disconnect itself.
    tab.on("replaced", lambda _data: (replaced.set(), tab.disconnect()))
    tab.connect(second.url, auth={"join_token": token}, transports=["websocket"],
                wait_timeout=5)
    provider.wait_for(lambda s: patient_presence(s) == "connected", 5)
    patient_id = next(p["id"] for p in provider.latest["participants"] if p["role"] == "patient")
    assert provider.client.call("admit", {"participant_id": patient_id}, timeout=5)["ok"]
    assert admitted.wait(5)
    said = tab.call("chat_send", {"text": "Can you hear me?"}, timeout=5)  # taken by B
    assert said["ok"], said

    again = socketio.Client(reconnection=False, websocket_extra_options={"origin": first.url})
    again.connect(first.url, auth={"join_token": token}, transports=["websocket"],
                  wait_timeout=5)
    history = again.call("chat_history", {}, timeout=5)

    assert replaced.wait(10), "the older tab on process B was not told"
    assert [m["text"] for m in history["messages"]] == ["Can you hear me?"]
    # One patient, connected throughout: no disconnect reached the provider.
    provider.wait_for(lambda s: not tab.connected, 5)
    assert patient_presence(provider.latest) == "connected"
    again.disconnect()
    provider.client.disconnect()
