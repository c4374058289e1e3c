"""The sandbox clinic: its schedule page, seeding, storage on its own bind, ``flask demo``."""
from __future__ import annotations

import importlib
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import requests

from app import create_app
from ehr.models import EhrEndpoint
from extensions import db
from sandbox_ehr import store
from sandbox_ehr.cli import demo_command
from sandbox_ehr.models import SandboxResource
from sandbox_ehr.seed import seed
from tests.conftest import make_config, seed_sandbox

ROW = re.compile(r'<tr data-testid="sandbox-appointment".*?</tr>', re.S)


BUTTONS = {  # label -> the app endpoint that enables it
    "Start virtual visit": "provider_launch.launch",
    "Open in MyChart": "patient_join.patient_launch",
    "Send appointment message": "hl7feed.intake",
    "Device test": "device_test.device_test",
}


def _disabled_buttons(row: str) -> set[str]:
    return set(re.findall(r'<button type="button" disabled>([^<]+?) '
                          r'<span class="soon">coming soon</span>', row))


def test_schedule_lists_todays_appointments_with_coming_soon_buttons(live_server):
    response = requests.get(f"{live_server.url}/sandbox")

    html = response.text
    rows = ROW.findall(html)
    assert response.status_code == 200
    assert len(rows) >= 6
    assert "<caption>" in html and 'scope="col"' in html
    zone = ZoneInfo(live_server.app.config["SANDBOX_TIMEZONE"])
    today = datetime.now(zone)
    assert f"{today:%B} {today.day}, {today.year}" in html
    missing = {label for label, endpoint in BUTTONS.items()
               if endpoint not in live_server.app.view_functions}
    for row in rows:
        assert _disabled_buttons(row) == missing
        for label in BUTTONS:
            assert label in row
    assert "Ada Testwell" in rows[0] and "Dr. Quinn Example" in rows[0]
    # Enabled (a link) once the provider launch exists, "coming soon" before: either way
    # the accessible name says whose visit it starts.
    assert re.search(r'Start virtual visit(?: <span class="soon">coming soon</span>)?'
                     r'<span class="visually-hidden">, Ada Testwell at 9:00', rows[0])


def test_schedule_enables_a_button_once_the_app_has_the_feature(app, client):
    if "provider_launch.launch" not in app.view_functions:
        app.add_url_rule("/launch", endpoint="provider_launch.launch",
                         view_func=lambda: "launch")

    html = client.get("/sandbox").get_data(as_text=True)

    first = ROW.findall(html)[0]
    assert re.search(r'<a class="button" href="/sandbox/launch/provider/appt-1">'
                     r'Start virtual visit<span class="visually-hidden">, Ada Testwell at [^<]+'
                     r'</span></a>', first)
    assert "Start virtual visit" not in _disabled_buttons(first)


def test_schedule_keeps_its_endpoint_name(app):
    with app.test_request_context():
        from flask import url_for

        assert url_for("sandbox_ehr.schedule") == "/sandbox"


def test_sandbox_tables_live_on_their_own_bind_not_in_the_app_metadata(app):
    with app.app_context():
        sandbox_tables = set(db.metadatas["sandbox"].tables)

    assert {"sandbox_resource", "sandbox_client", "sandbox_launch", "sandbox_auth_code",
            "sandbox_access_token", "sandbox_assertion_jti"} <= sandbox_tables
    assert not sandbox_tables & set(db.metadata.tables)
    assert not any(name.startswith("sandbox_") for name in db.metadata.tables)


def test_seeding_twice_duplicates_nothing(app):
    with app.app_context():
        before = db.session.execute(db.select(SandboxResource.type, SandboxResource.id,
                                              SandboxResource.version)).all()

        summary = seed()

        after = db.session.execute(db.select(SandboxResource.type, SandboxResource.id,
                                             SandboxResource.version)).all()
    assert sorted(after) == sorted(before)
    assert summary.changed == 0
    assert summary.appointments >= 6


def test_reseeding_moves_appointments_to_today(app):
    with app.app_context():
        zone = ZoneInfo(app.config["SANDBOX_TIMEZONE"])
        old = store.read("Appointment", "appt-1")
        moved = (datetime.fromisoformat(old["start"]) - timedelta(days=3)).isoformat()
        store.upsert("Appointment", "appt-1", {**old, "start": moved})
        db.session.commit()

        seed()

        start = datetime.fromisoformat(store.read("Appointment", "appt-1")["start"])
    assert start.astimezone(zone).date() == datetime.now(zone).date()


def test_seeded_appointments_link_patient_practitioner_and_encounter(app):
    with app.app_context():
        appointments = store.find("Appointment", {})
        encounters = store.find("Encounter", {})

    assert len(appointments) >= 6
    for appointment in appointments:
        actors = {p["actor"]["reference"].split("/")[0] for p in appointment["participant"]}
        assert {"Patient", "Practitioner"} <= actors
        assert appointment["serviceType"][0]["text"] == "Video visit"
        assert appointment["identifier"]
    linked = {e["appointment"][0]["reference"] for e in encounters}
    assert linked == {f"Appointment/{a['id']}" for a in appointments}


@pytest.mark.parametrize("resource_type", ["Patient", "Practitioner", "Location", "Appointment",
                                           "Encounter"])
def test_seeded_resources_are_valid_r4(app, resource_type):
    module = importlib.import_module(f"fhir.resources.R4B.{resource_type.lower()}")
    model = getattr(module, resource_type)
    with app.app_context():
        resources = store.find(resource_type, {})

    assert resources
    for resource in resources:
        model.model_validate(resource)


def test_seeded_phone_numbers_are_fictional(app):
    with app.app_context():
        patients = store.find("Patient", {})

    phones = [t["value"] for p in patients for t in p["telecom"]]
    assert len(patients) == 6
    assert all(re.search(r"555-01\d\d$", phone) for phone in phones)


def test_signing_key_survives_a_restart(tmp_path):
    config = make_config(tmp_path)
    seed_sandbox(create_app(config))
    first = create_app(config).test_client().get("/sandbox/oauth/jwks.json").json

    second = create_app(config).test_client().get("/sandbox/oauth/jwks.json").json

    assert first == second
    assert "d" not in first["keys"][0]  # public parts only


def test_demo_command_seeds_and_prints_the_urls(app):
    runner = app.test_cli_runner()

    result = runner.invoke(args=["demo"])
    again = runner.invoke(args=["demo"])

    base = app.config["PUBLIC_BASE_URL"]
    assert result.exit_code == 0, result.output
    assert again.exit_code == 0, again.output
    with app.app_context():
        endpoints = db.session.execute(db.select(EhrEndpoint)).scalars().all()
    assert [(e.fhir_base_url, e.is_approved) for e in endpoints] == [(f"{base}/sandbox/fhir", True)]
    assert f"{base}/sandbox\n" in result.output
    assert f"{base}/sandbox/fhir\n" in result.output
    assert f"{base}/sandbox/fhir/.well-known/smart-configuration" in result.output


def test_demo_command_refuses_when_the_sandbox_is_off(tmp_path):
    app = create_app(make_config(tmp_path, SANDBOX=False))

    result = app.test_cli_runner().invoke(demo_command)

    assert result.exit_code != 0
    assert "VV_SANDBOX=1" in result.output


def test_first_visit_can_start_now_for_the_demo(tmp_path):
    app = create_app(make_config(tmp_path, SANDBOX_FIRST_VISIT="now"))

    seed_sandbox(app)

    with app.app_context():
        start = datetime.fromisoformat(store.read("Appointment", "appt-1")["start"])

    waited = datetime.now(start.tzinfo) - start
    assert timedelta(0) <= waited < timedelta(minutes=5)
