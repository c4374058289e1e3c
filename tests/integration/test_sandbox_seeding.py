"""Building the app never writes: the sandbox is seeded only by ``flask sandbox seed`` and
``flask demo``, and ``flask demo`` run again starts a fresh clinic day."""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

from app import create_app
from ehr.models import WritebackOutbox
from extensions import db
from sandbox_ehr import store
from sandbox_ehr.cli import sandbox_cli
from sandbox_ehr.models import SandboxClient
from tests.conftest import build_app, dispose_app, make_config
from visits import lobby
from visits.models import Appointment

ROOT = Path(__file__).resolve().parents[2]


def _dump(path: Path) -> list[str]:
    """Every table and row of a SQLite file, read-only (opening must not create it)."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(connection.iterdump())
    finally:
        connection.close()


def _flask(env: dict, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"flask {' '.join(args)}:\n{done.stdout}{done.stderr}"
    return done


def _cli_env(tmp_path: Path, **extra: str) -> dict:
    env = {key: value for key, value in os.environ.items() if not key.startswith("VV_")}
    env.update({
        "VV_SANDBOX": "1",
        "VV_INSTANCE_PATH": str(tmp_path / "instance"),
        "VV_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "VV_SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.db'}",
        "VV_SECRET_KEY": "seeding-test-secret-key-0123456789abcdef",
        "VV_LOG_FORMAT": "text",
        **extra,
    })
    return env


def test_building_the_app_with_the_sandbox_on_writes_no_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VV_SANDBOX", "1")
    config = make_config(tmp_path)
    del config["SANDBOX"]  # from the environment, as `VV_SANDBOX=1 flask ...` sets it
    app_db, sandbox_db = tmp_path / "app.db", tmp_path / "sandbox.db"

    app = create_app(config)

    assert app.config["SANDBOX"] is True
    assert not app_db.exists() or _dump(app_db) == ["BEGIN TRANSACTION;", "COMMIT;"]
    assert not sandbox_db.exists() or _dump(sandbox_db) == ["BEGIN TRANSACTION;", "COMMIT;"]


def test_building_the_app_leaves_a_seeded_database_as_it_was(tmp_path, monkeypatch):
    seeded = build_app(tmp_path, monkeypatch, PUBLIC_BASE_URL="http://127.0.0.1:5055")
    dispose_app(seeded)
    before = (_dump(tmp_path / "app.db"), _dump(tmp_path / "sandbox.db"))

    # Another port, as `VV_SANDBOX=1 flask routes` without the demo's settings would be.
    again = create_app(make_config(tmp_path, PUBLIC_BASE_URL="http://127.0.0.1:5000"))
    dispose_app(again)

    assert (_dump(tmp_path / "app.db"), _dump(tmp_path / "sandbox.db")) == before


def test_flask_routes_leaves_the_registered_redirect_uris_alone(tmp_path):
    demo = _cli_env(tmp_path, VV_PUBLIC_BASE_URL="http://127.0.0.1:5055")
    _flask(demo, "db", "upgrade")
    _flask(demo, "sandbox", "seed")
    before = _dump(tmp_path / "sandbox.db")

    routes = _flask(_cli_env(tmp_path), "routes")  # PUBLIC_BASE_URL: the default, port 5000

    assert "/sandbox/fhir" in routes.stdout
    assert _dump(tmp_path / "sandbox.db") == before
    with sqlite3.connect(f"file:{tmp_path / 'sandbox.db'}?mode=ro", uri=True) as connection:
        (uris,) = connection.execute("SELECT redirect_uris FROM sandbox_client "
                                     "WHERE client_id = 'virtual-visits'").fetchone()
    assert "http://127.0.0.1:5055/launch/callback" in uris and ":5000/" not in uris


def test_sandbox_seed_command_seeds_and_says_so(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = create_app(make_config(tmp_path, PUBLIC_BASE_URL="http://127.0.0.1:5077"))
    runner = app.test_cli_runner()

    help_text = runner.invoke(args=["sandbox", "seed", "--help"]).output
    result = runner.invoke(args=["sandbox", "seed"])

    assert "today's clinic" in help_text and "SMART client" in help_text
    assert result.exit_code == 0, result.output
    assert "6 appointments" in result.output
    with app.app_context():
        assert len(store.find("Appointment", {})) == 6
        client = db.session.get(SandboxClient, "virtual-visits")
        assert "http://127.0.0.1:5077/launch/callback" in client.redirect_uris
    dispose_app(app)


def test_sandbox_seed_refuses_when_the_sandbox_is_off(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = create_app(make_config(tmp_path, SANDBOX=False))

    result = app.test_cli_runner().invoke(sandbox_cli, ["seed"])

    assert result.exit_code != 0
    assert "VV_SANDBOX=1" in result.output


def test_unseeded_sandbox_says_how_to_seed_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = create_app(make_config(tmp_path))

    response = app.test_client().get("/sandbox")

    assert response.status_code == 503
    assert "flask --app app sandbox seed" in response.get_data(as_text=True)
    dispose_app(app)


def _patient_link(client) -> str:
    page = client.post("/sandbox/appointments/appt-1/patient-link")
    assert page.status_code == 200, page.get_data(as_text=True)
    url = re.search(r'value="(http[^"]+/j/[^"]+)"', page.get_data(as_text=True)).group(1)
    return urlsplit(url).path


def test_demo_again_starts_a_fresh_clinic_day(tmp_path, monkeypatch):
    # The first visit starts now, so its links are good whatever the hour of the run.
    app = build_app(tmp_path, monkeypatch, SANDBOX_FIRST_VISIT="now")
    client, runner = app.test_client(), app.test_cli_runner()
    assert runner.invoke(args=["demo"]).exit_code == 0
    assert client.get(_patient_link(client), follow_redirects=True).status_code == 200
    with app.app_context():
        appointment = db.session.execute(
            db.select(Appointment).filter_by(ehr_appointment_id="appt-1")).scalar_one()
        provider = next(p for p in appointment.participants if p.role == "provider")
        lobby.end_visit(appointment.id, provider.id, datetime.now(timezone.utc))
        assert db.session.execute(db.select(WritebackOutbox)).scalars().all()
        # What the app wrote into the EHR during that visit (the outbox delivers it).
        store.upsert("AuditEvent", "earlier-run", {"resourceType": "AuditEvent"})
        db.session.commit()
        db.session.remove()
    ended = client.get(_patient_link(client), follow_redirects=True)
    assert ended.status_code == 410  # the visit has ended: every new link says so

    again = runner.invoke(args=["demo"])

    assert again.exit_code == 0, again.output
    assert "Earlier demo visits cleared: 1" in again.output
    with app.app_context():
        assert db.session.execute(db.select(Appointment)).scalars().all() == []
        assert db.session.execute(db.select(WritebackOutbox)).scalars().all() == []
        assert store.find("AuditEvent", {}) == []
        assert len(store.find("Appointment", {})) == 6
        db.session.remove()
    assert client.get(_patient_link(client), follow_redirects=True).status_code == 200
    dispose_app(app)
