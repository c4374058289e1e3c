"""The provider's path in real Chromium: "Start virtual visit" in the sandbox EHR, the full
SMART launch, the visit page, a patient arriving over the real Socket.IO protocol, admit,
and the AuditEvents that reach the EHR."""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from datetime import datetime, timezone

import pytest
import socketio
from fhir.resources.R4B.auditevent import AuditEvent
from playwright.sync_api import expect

from tests.browser.accessibility import serious_violations
from tests.browser.conftest import reschedule, screenshot

pytestmark = pytest.mark.browser


class PatientSocket:
    """A patient's browser as the server sees it: a Socket.IO client with a join token."""

    def __init__(self, url: str, token: str):
        self.states: list[str] = []
        self.admitted = threading.Event()
        self.client = socketio.Client(reconnection=False)
        self.client.on("lobby_state", self._on_lobby_state)
        self.client.connect(url, auth={"join_token": token}, transports=["websocket"],
                            wait_timeout=5)

    def _on_lobby_state(self, state):
        self.states.append(state["state"])
        if state["state"] == "admitted":
            self.admitted.set()


def launch_visit(live_app, page, sandbox_id: str = "appt-1") -> int:
    """Move the sandbox appointment to now (so its waiting room is open whatever the hour),
    then "Start virtual visit" on the schedule; returns the app's appointment id."""
    reschedule(live_app, sandbox_id, datetime.now(timezone.utc))
    page.goto(live_app.url + "/sandbox")
    row = page.locator(f'[data-testid="sandbox-appointment"][data-appointment-id="{sandbox_id}"]')
    row.get_by_role("link", name=re.compile(r"^Start virtual visit")).click()
    page.wait_for_url(re.compile(r"/visit/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def patient_token(live_app, appointment_id: int) -> str:
    visits = json.loads(live_app.flask("appointments", "list", "--json"))
    visit = next(v for v in visits if v["id"] == appointment_id)
    patient = next(p for p in visit["participants"] if p["role"] == "patient")
    return json.loads(live_app.flask("links", "create", str(patient["id"]), "--json"))["token"]


def sandbox_audit_events(live_app, sandbox_id: str = "appt-1") -> list[dict]:
    """AuditEvents about one sandbox appointment: the session's server is shared, and the
    join-page tests' patients (other appointments) may still be delivering theirs."""
    path = live_app.env["VV_SANDBOX_DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        rows = connection.execute(
            "SELECT body FROM sandbox_resource WHERE type = 'AuditEvent'").fetchall()
    events = [json.loads(body) for (body,) in rows]
    return [e for e in events if any(entity.get("what", {}).get("reference")
                                     == f"Appointment/{sandbox_id}"
                                     for entity in e.get("entity", []))]


def test_launch_presence_admit_and_audit_trail(live_app, page):
    appointment_id = launch_visit(live_app, page)
    provider = page.locator('[data-testid="participant"][data-role="provider"]')
    patient_row = page.locator('[data-testid="participant"][data-role="patient"]')
    expect(provider).to_have_attribute("data-presence", "connected")
    expect(patient_row).to_have_attribute("data-presence", "never")
    expect(patient_row).to_contain_text("Ada Testwell")  # read live from the sandbox's FHIR
    token = patient_token(live_app, appointment_id)

    patient = PatientSocket(live_app.url, token)

    expect(patient_row).to_have_attribute("data-presence", "connected", timeout=1000)
    expect(page.get_by_test_id("admit")).to_be_visible(timeout=1000)
    assert page.title().startswith("(1)")
    assert serious_violations(page) == []
    screenshot(page, "provider-visit-patient-waiting")

    page.get_by_test_id("admit").click()

    assert patient.admitted.wait(2), patient.states
    expect(page.get_by_test_id("admit")).to_have_count(0)
    patient.client.disconnect()
    expect(patient_row).to_have_attribute("data-presence", "disconnected", timeout=1500)
    screenshot(page, "provider-visit-patient-left")

    deadline = time.monotonic() + 20
    events = []
    while time.monotonic() < deadline and len(events) < 4:
        events = sandbox_audit_events(live_app)
        time.sleep(0.2)  # polling the EHR's store until the outbox has delivered
    assert len(events) == 4, events  # provider + patient connected, admitted, disconnected
    for event in events:
        AuditEvent.model_validate(event)
    assert all(any(e.get("what", {}).get("reference", "").startswith("Appointment/")
                   for e in event["entity"]) for event in events)


def test_visit_page_refuses_without_launch(live_app, page):
    response = page.goto(live_app.url + "/visit/1")

    assert response.status == 403
    assert serious_violations(page) == []
