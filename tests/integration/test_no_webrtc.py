"""Issue 14, item 15: a browser that cannot make calls. Its page says so to the staff
(``report_media`` with ``webrtc: false`` -> ``participant_media``), and a device test whose
test call could not run is never a pass, on the server and in the Observation."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.observation import Observation

from device_test import context as ctx
from device_test.models import DeviceTestResult
from ehr.models import WritebackOutbox
from extensions import db
from tests import factories
from tests.integration.test_device_test import _result
from tests.integration.test_visit_realtime import last, patient_socket, staff_socket
from visits import presence
from visits.models import Participant


@pytest.fixture
def visit(app):
    presence.reset_for_tests()
    with app.app_context():
        yield factories.make_visit()


def test_a_browser_without_webrtc_is_told_to_the_staff(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.get_received()

    reply = patient.emit("report_media", {"camera": "on", "microphone": "on", "webrtc": False},
                         callback=True)

    assert reply == {"ok": True}
    heard = last(staff.client.get_received(), "participant_media")
    assert (heard["participant_id"], heard["webrtc"]) == (visit.patient.id, False)
    snapshot = staff.emit("get_visit_state", callback=True)["state"]
    patient_row = next(p for p in snapshot["participants"] if p["id"] == visit.patient.id)
    assert patient_row["media"]["webrtc"] is False


def test_a_page_that_does_not_say_is_taken_as_able_to_call(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.get_received()

    patient.emit("report_media", {"camera": "on", "microphone": "on"}, callback=True)

    assert last(staff.client.get_received(), "participant_media")["webrtc"] is True


@pytest.mark.parametrize("webrtc", ["no", 0, 1, {}])
def test_webrtc_must_be_a_boolean(app, visit, webrtc):
    patient = patient_socket(app, visit.patient)

    reply = patient.emit("report_media", {"camera": "on", "microphone": "on", "webrtc": webrtc},
                         callback=True)

    assert reply["ok"] is False and reply["code"] == "invalid_payload"


@pytest.mark.parametrize("test_call", [
    {"status": "skipped", "message": "This browser can't make video visits."},
    {"status": "fail", "message": "This browser can't make video calls."},
])
def test_a_test_call_that_could_not_run_is_never_a_pass(app, client, test_call):
    """Every other check passed: the result is still a fail, and the EHR's Observation
    says so and stays valid FHIR."""
    document = _result()
    document["checks"]["connection"] = {"status": "pass", "rtt_ms": 20}
    document["checks"]["test_call"] = test_call
    with app.app_context():
        made = factories.make_visit()
        token = ctx.make_token(app.config["SECRET_KEY"],
                               db.session.get(Participant, made.patient.id))

    response = client.post("/device-test/results", json={**document, "context": token})

    assert response.status_code == 201 and response.json["overall"] == "fail"
    with app.app_context():
        assert db.session.get(DeviceTestResult, response.json["id"]).overall == "fail"
        payload = db.session.execute(sa.select(WritebackOutbox)).scalar_one().payload
    Observation.model_validate(payload)
    assert payload["valueCodeableConcept"]["coding"][0]["code"] == "fail"
    grades = {c["code"]["coding"][0]["code"]: c["valueCodeableConcept"]["coding"][0]["code"]
              for c in payload["component"] if "valueCodeableConcept" in c}
    assert grades["test_call"] == test_call["status"]
