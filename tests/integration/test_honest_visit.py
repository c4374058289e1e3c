"""Issue 14: what the care team is told of a patient's camera and microphone
(``report_media`` -> ``participant_media``), what the waiting room tells the patient
(whether a provider is there; the clinic's phone once the visit is late), and the clinic
phone on the refusal pages and in the admin's endpoint form."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from extensions import db
from tests import factories
from tests.admin_helpers import csrf_token, signed_in_client
from tests.integration.test_admin_endpoints import stored, valid_form
from tests.integration.test_visit_realtime import last, patient_socket, staff_socket
from visits import media, presence
from visits.links import create_join_link


@pytest.fixture
def visit(app):
    presence.reset_for_tests()
    with app.app_context():
        made = factories.make_visit()
        made.appointment.endpoint.clinic_phone = "+1 (312) 555-0100"
        db.session.commit()
        yield made
    presence.reset_for_tests()
    media._states.clear()


def test_a_patients_camera_and_microphone_reach_the_staff(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.get_received()

    reply = patient.emit("report_media", {"camera": "blocked", "microphone": "muted"},
                         callback=True)

    assert reply == {"ok": True}
    heard = last(staff.client.get_received(), "participant_media")
    assert (heard["participant_id"], heard["camera"], heard["microphone"]) == (
        visit.patient.id, "blocked", "muted")
    assert staff.emit("get_visit_state", callback=True)["state"]["participants"][1]["media"][
        "camera"] == "blocked"
    assert last(patient.get_received(), "participant_media") is None  # staff only


@pytest.mark.parametrize("payload", [
    {"camera": "broken", "microphone": "on"},
    {"camera": "on", "microphone": 3},
    {"camera": "on"},
    {},
])
def test_report_media_refuses_anything_but_the_known_states(app, visit, payload):
    patient = patient_socket(app, visit.patient)

    reply = patient.emit("report_media", payload, callback=True)

    assert reply["ok"] is False and reply["code"] == "invalid_payload"


def test_the_lobby_state_says_when_to_call_the_clinic(app, visit):
    app.config["LOBBY_CALL_CLINIC_AFTER_MINUTES"] = 12

    state = last(patient_socket(app, visit.patient).get_received(), "lobby_state")

    assert state["provider_present"] is False
    assert state["clinic_phone"] == "+1 (312) 555-0100"
    start = visit.appointment.start_at
    assert datetime.fromisoformat(state["call_clinic_at"]) == start + timedelta(minutes=12)


def test_an_ended_visit_and_an_unknown_link_show_the_clinic_phone(app, client, visit):
    expired = create_join_link(visit.patient,  # in the visit fixture's app context
                               expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))

    for path in (f"/j/{expired}", "/j/no-such-link-at-all"):
        page = client.get(path).get_data(as_text=True)

        assert 'data-testid="clinic-phone"' in page, path
        assert 'href="tel:+13125550100"' in page and "+1 (312) 555-0100" in page


def test_an_unknown_link_shows_no_phone_when_clinics_differ(app, client, visit):
    other = factories.make_endpoint(name="other", base="https://other.example.org/fhir")
    other.clinic_phone = "+1 555 0199"
    db.session.commit()

    page = client.get("/j/no-such-link-at-all").get_data(as_text=True)

    assert 'data-testid="clinic-phone"' not in page


def test_the_admin_sets_and_clears_the_clinic_phone(app):
    client = signed_in_client(app)
    created = client.post("/admin/endpoints/new", data={
        **valid_form(clinic_phone="+1 312-555-0100"),
        "csrf_token": csrf_token(client, "/admin/endpoints/new")})
    assert created.status_code == 303
    assert stored(app, "epic-test").clinic_phone == "+1 312-555-0100"

    form = valid_form(clinic_phone="")
    form.pop("name")
    cleared = client.post("/admin/endpoints/epic-test", data={
        **form, "csrf_token": csrf_token(client, "/admin/endpoints/epic-test")})

    assert cleared.status_code == 303
    assert stored(app, "epic-test").clinic_phone is None


@pytest.mark.parametrize("phone", ["call us", "12", "+1 312 555 0100 ext. 4", "9" * 41])
def test_the_admin_form_refuses_what_is_not_a_phone_number(app, phone):
    client = signed_in_client(app)

    response = client.post("/admin/endpoints/new", data={
        **valid_form(clinic_phone=phone), "csrf_token": csrf_token(client, "/admin/endpoints/new")})

    assert response.status_code == 400
    assert 'id="clinic_phone-error"' in response.get_data(as_text=True)
    assert stored(app, "epic-test") is None
