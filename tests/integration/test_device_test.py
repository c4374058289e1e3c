"""The device test's server side: the page, the throughput probes, the results API with
its schema and size limits, context tokens (tamper, expiry, mismatch), the Observation
queued for the EHR and delivered to the sandbox, and the staff's view of the result."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import pytest
import requests
import sqlalchemy as sa
from fhir.resources.R4B.observation import Observation
from itsdangerous import URLSafeTimedSerializer

from app import create_app
from device_test import context as ctx
from device_test.models import DeviceTestResult
from ehr import backend_auth, outbox
from ehr.models import WritebackOutbox
from ehr.services import ensure_endpoint
from extensions import db
from sandbox_ehr import store
from tests import factories
from tests.conftest import make_config
from visits import state
from visits.models import Appointment, Participant

EVENT_SYSTEM = "urn:virtual-visits:event"
CHECKS = ["speaker", "microphone", "camera", "connection", "test_call"]


def _result(**overrides) -> dict:
    """A complete, valid result as the page posts it."""
    checks = {
        "speaker": {"status": "pass", "heard": True},
        "microphone": {"status": "pass", "peak_dbfs": -12.5, "clipping_pct": 0},
        "camera": {"status": "pass", "width": 640, "height": 480, "fps": 20, "black_pct": 0,
                   "frozen": False},
        "connection": {"status": "warn", "message": "Your connection is slow.", "rtt_ms": 300,
                       "download_kbps": 4000, "upload_kbps": 900,
                       "transports": [{"kind": "turn-udp", "status": "pass", "error": None,
                                       "ms": 40}]},
        "test_call": {"status": "pass", "rtt_ms": 80, "jitter_ms": 3, "packet_loss_pct": 0.5,
                      "bitrate_in_kbps": 900, "bitrate_out_kbps": 950, "mos": 4.3,
                      "video_limited": True, "relay": "pass"},
    }
    return {"version": 1, "browser": "test", "checks": checks, **overrides}


@dataclass(frozen=True)
class VisitIds:
    """Row ids only: each test step opens its own app context (and session)."""

    endpoint_id: int
    appointment_id: int
    patient_id: int


@pytest.fixture
def visit(app) -> VisitIds:
    with app.app_context():
        made = factories.make_visit()
        return VisitIds(made.appointment.endpoint_id, made.appointment.id, made.patient.id)


def _token(app, participant_id: int) -> str:
    with app.app_context():
        return ctx.make_token(app.config["SECRET_KEY"], db.session.get(Participant, participant_id))


# --- the page and probes -------------------------------------------------------------------

@pytest.mark.parametrize("lang, text", [("en", "Test your devices"),
                                        ("es", "Pruebe sus dispositivos"),
                                        ("pt_BR", "Teste seus dispositivos")])
def test_page_lists_every_check_pending_in_each_language(client, lang, text):
    html = client.get(f"/device-test?lang={lang}").get_data(as_text=True)

    assert text in html
    for testid in ("check-speaker", "check-microphone", "check-camera", "check-connection",
                   "check-test-call"):
        assert f'data-testid="{testid}" data-status="pending"' in html
    assert 'data-testid="device-test-summary"' in html


def test_page_gives_short_lived_turn_credentials_and_thresholds(app, client):
    app.config.update(TURN_URLS="turn:turn.example.org:3478", TURN_SECRET="s3cret",
                      DEVICE_TEST_RTT_MS="200,300")

    html = client.get("/device-test").get_data(as_text=True)

    data = json.loads(html.split('id="device-test-data">')[1].split("</script>")[0])
    turn = data["ice_servers"][0]
    assert turn["urls"] == ["turn:turn.example.org:3478"] and turn["credential"]
    assert data["thresholds"]["rtt_ms"] == [200.0, 300.0]
    assert data["thresholds"]["mos"] == [3.6, 3.1]
    assert data["context"] is None


def test_page_with_a_bad_context_says_the_result_will_not_reach_the_care_team(client):
    html = client.get("/device-test?ctx=forged").get_data(as_text=True)

    assert "your care team will not see the result" in html


def test_back_link_only_goes_to_our_own_pages(client):
    assert 'href="/join"' in client.get("/device-test?next=/join").get_data(as_text=True)
    assert "evil.example" not in client.get(
        "/device-test?next=//evil.example/x").get_data(as_text=True)


@pytest.mark.parametrize("query", ["", "?bytes=0", "?bytes=abc", f"?bytes={4 * 1024 * 1024 + 1}"])
def test_download_probe_refuses_bad_sizes(client, query):
    assert client.get(f"/device-test/download{query}").status_code == 400


def test_download_probe_sends_uncached_bytes(client):
    response = client.get("/device-test/download?bytes=200000")

    assert len(response.data) == 200000
    assert response.headers["Cache-Control"] == "no-store"


def test_upload_probe_counts_and_refuses_oversized_bodies(client):
    assert client.post("/device-test/upload", data=b"x" * 1000).json == {"ok": True,
                                                                        "bytes": 1000}
    assert client.post("/device-test/upload", data=b"x" * (4 * 1024 * 1024 + 1)).status_code \
        == 413


# --- the results API -----------------------------------------------------------------------

def _broken(path: list[str], value) -> dict:
    document = _result()
    target = document
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return document


@pytest.mark.parametrize("document, where", [
    (_broken(["checks", "camera"], KeyError), "checks"),
    (_broken(["checks", "camera", "status"], "great"), "checks/camera/status"),
    (_broken(["checks", "test_call", "mos"], 7), "checks/test_call/mos"),
    (_broken(["checks", "microphone", "name"], "Ada"), "checks/microphone"),
    (_broken(["patient"], "Ada Testwell"), "(body)"),
    (_broken(["checks", "connection", "transports"], [{"kind": "ftp", "status": "pass"}]),
     "checks/connection/transports/0/kind"),
    ([], "(body)"),
])
def test_malformed_results_are_refused_with_where(client, document, where):
    response = client.post("/device-test/results", json=document)

    assert response.status_code == 400
    assert response.json["ok"] is False and response.json["error"].startswith(where)


def test_non_json_and_oversized_results_are_refused(client):
    not_json = client.post("/device-test/results", data="{nope", content_type="application/json")
    form = client.post("/device-test/results", data={"checks": "x"})
    big = _result(browser="x" * 100)
    big["checks"]["speaker"]["message"] = "y" * 70_000
    oversized = client.post("/device-test/results", json=big)

    assert not_json.status_code == 400 and "JSON" in not_json.json["error"]
    assert form.status_code == 400
    assert oversized.status_code == 400 and "larger than" in oversized.json["error"]


def test_a_result_without_context_is_stored_anonymously_and_not_written_back(app, client):
    response = client.post("/device-test/results", json=_result(), headers={
        "User-Agent": "Mozilla/5.0 (Linux; Android 10; K) Chrome/156.0.0.0 Mobile Safari/537.36"})

    assert response.status_code == 201
    assert response.json["overall"] == "warn" and response.json["written_back"] is False
    with app.app_context():
        stored = db.session.get(DeviceTestResult, response.json["id"])
        assert stored.appointment_id is None and stored.participant_id is None
        assert stored.user_agent_summary == "Chrome 156 / Android"
        assert db.session.execute(sa.select(WritebackOutbox)).first() is None


def test_overall_is_computed_by_the_server_and_nothing_run_is_a_fail(client):
    skipped = {"checks": {name: {"status": "skipped"} for name in CHECKS}}

    assert client.post("/device-test/results", json=skipped).json["overall"] == "fail"


def test_a_patients_result_with_context_queues_a_valid_observation(app, client, visit):
    token = _token(app, visit.patient_id)

    response = client.post("/device-test/results", json=_result(context=token))

    assert response.status_code == 201 and response.json["written_back"] is True
    with app.app_context():
        row = db.session.execute(sa.select(WritebackOutbox)).scalar_one()
        payload = row.payload
        assert row.resource_type == "Observation"
        assert payload["identifier"] == [{"system": EVENT_SYSTEM,
                                          "value": row.business_identifier}]
        Observation.model_validate(payload)
        stored = db.session.get(DeviceTestResult, response.json["id"])
        assert (stored.appointment_id, stored.participant_id) == (visit.appointment_id,
                                                                  visit.patient_id)
    assert payload["subject"] == {"reference": "Patient/appt-1-pt"}
    assert payload["focus"] == [{"reference": "Appointment/appt-1"}]
    grades = {c["code"]["coding"][0]["code"]: c["valueCodeableConcept"]["coding"][0]["code"]
              for c in payload["component"] if "valueCodeableConcept" in c}
    assert grades == {"speaker": "pass", "microphone": "pass", "camera": "pass",
                      "connection": "warn", "test_call": "pass"}
    quantities = {c["code"]["coding"][0]["code"]: c["valueQuantity"]
                  for c in payload["component"] if "valueQuantity" in c}
    assert quantities["test_call.rtt_ms"] == {"value": 80.0, "unit": "ms",
                                              "system": "http://unitsofmeasure.org", "code": "ms"}
    assert quantities["connection.download_kbps"]["code"] == "kbit/s"
    assert quantities["camera.fps"]["code"] == "/s"
    assert payload["valueCodeableConcept"]["coding"][0]["code"] == "warn"


def test_a_guests_result_is_kept_for_the_visit_but_not_written_to_the_patients_chart(
        app, client, visit):
    with app.app_context():
        appointment = db.session.get(Appointment, visit.appointment_id)
        guest = Participant(appointment=appointment, role="guest", display_name="Sam")
        db.session.add(guest)
        db.session.commit()
        guest_id = guest.id
    token = _token(app, guest_id)

    response = client.post("/device-test/results", json=_result(context=token))

    assert response.json["written_back"] is False
    with app.app_context():
        assert db.session.get(DeviceTestResult, response.json["id"]).participant_id == guest_id
        assert db.session.execute(sa.select(WritebackOutbox)).first() is None


def _forged(app, data: dict, secret: str | None = None) -> str:
    return URLSafeTimedSerializer(secret or app.config["SECRET_KEY"], salt=ctx.SALT).dumps(data)


@pytest.mark.parametrize("make", [
    lambda app, v: _token(app, v.patient_id)[:-2] + "xx",  # tampered signature
    lambda app, v: _forged(app, {"e": v.endpoint_id, "a": v.appointment_id,
                                 "p": v.patient_id}, secret="another-secret-key-0123456789"),
    lambda app, v: _forged(app, {"e": v.endpoint_id + 1, "a": v.appointment_id,
                                 "p": v.patient_id}),  # another EHR
    lambda app, v: _forged(app, {"e": v.endpoint_id, "a": v.appointment_id + 1,
                                 "p": v.patient_id}),  # another appointment
    lambda app, v: _forged(app, {"e": v.endpoint_id, "a": v.appointment_id}),
    lambda app, v: URLSafeTimedSerializer(app.config["SECRET_KEY"], salt="other").dumps(
        {"e": v.endpoint_id, "a": v.appointment_id, "p": v.patient_id}),
], ids=["tampered", "other-key", "other-endpoint", "other-appointment", "no-participant",
        "other-salt"])
def test_a_bad_context_stores_the_result_anonymously(app, client, visit, make):
    token = make(app, visit)

    response = client.post("/device-test/results", json=_result(context=token))

    assert response.status_code == 201
    assert response.json["written_back"] is False and response.json["context_error"] == "invalid"
    with app.app_context():
        assert db.session.get(DeviceTestResult, response.json["id"]).appointment_id is None
        assert db.session.execute(sa.select(WritebackOutbox)).first() is None


def test_an_expired_context_is_reported_as_expired(app, client, visit, monkeypatch):
    token = _token(app, visit.patient_id)
    app.config["DEVICE_TEST_CONTEXT_TTL_SECONDS"] = 60
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 120)

    response = client.post("/device-test/results", json=_result(context=token))

    assert response.json["context_error"] == "expired"
    assert response.json["written_back"] is False


def test_staff_see_each_participants_latest_result(app, client, visit):
    token = _token(app, visit.patient_id)
    first = _result(context=token)
    first["checks"]["camera"]["status"] = "fail"
    client.post("/device-test/results", json=first)
    client.post("/device-test/results", json=_result(context=token))

    with app.app_context():
        snapshot = state.staff_view(db.session.get(Appointment, visit.appointment_id),
                                    datetime.now(timezone.utc))

    by_role = {p["role"]: p["device_test"] for p in snapshot["participants"]}
    assert by_role["patient"]["overall"] == "warn"
    assert by_role["provider"] is None


# --- end to end: the Observation reaches the sandbox EHR ------------------------------------

def test_the_observation_arrives_in_the_sandbox_ehr_and_validates(live_server):
    app = live_server.app
    backend_auth.clear_cache()
    with app.app_context():
        endpoint = ensure_endpoint(f"ep-{uuid.uuid4().hex[:8]}", live_server.url + "/sandbox/fhir",
                                   client_id="virtual-visits", scopes="launch openid",
                                   approved_by="test")
        visit = factories.make_visit(endpoint, ehr_id=f"appt-{uuid.uuid4().hex[:8]}")
        token = ctx.make_token(app.config["SECRET_KEY"], visit.patient)
        response = requests.post(f"{live_server.url}/device-test/results",
                                 json=_result(context=token), timeout=10)
        assert response.status_code == 201 and response.json()["written_back"] is True

        assert outbox.process_due() >= 1

        row = db.session.execute(sa.select(WritebackOutbox).filter_by(
            appointment_id=visit.appointment.id)).scalar_one()
        assert row.status == "sent", row.last_error
        found = store.find("Observation", {"identifier": [f"{EVENT_SYSTEM}|"
                                                          f"{row.business_identifier}"]})
        assert len(found) == 1 and found[0]["id"] == row.remote_id
        Observation.model_validate(found[0])
        appointment_reference = f"Appointment/{visit.appointment.ehr_appointment_id}"
        assert found[0]["focus"][0]["reference"] == appointment_reference
        db.session.remove()


def test_the_join_page_links_to_the_device_test_with_the_patients_context(app, client, visit):
    with app.app_context():
        token = factories.join_token(db.session.get(Participant, visit.patient_id))
    client.get(f"/j/{token}")

    html = client.get("/join").get_data(as_text=True)

    href = html.split('data-testid="device-test-link"')[0].rsplit('href="', 1)[1].split('"')[0]
    assert href.startswith("/device-test?ctx=")
    context_token = href.split("ctx=")[1].split("&")[0]
    with app.app_context():
        read = ctx.read_token(app.config["SECRET_KEY"], context_token, 60)
    assert read.participant_id == visit.patient_id


def test_probes_and_results_are_rate_limited_per_client(tmp_path, monkeypatch):
    # An anonymous page that makes the server send megabytes needs a cap per client.
    monkeypatch.chdir(tmp_path)
    limited = create_app(make_config(tmp_path, DEVICE_TEST_RATE_LIMIT="3 per minute"))
    with limited.app_context():
        db.create_all()
    client = limited.test_client()

    downloads = [client.get("/device-test/download?bytes=16").status_code for _ in range(3)]
    over = client.get("/device-test/download?bytes=16", headers={"Accept": "application/json"})

    assert downloads == [200, 200, 200]
    assert over.status_code == 429 and int(over.headers["Retry-After"]) > 0
    # The page itself stays open, so the patient can still read what to do.
    assert client.get("/device-test").status_code == 200
