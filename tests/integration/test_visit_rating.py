"""Issue 14, "a clean end": the optional one-tap rating. Only once the visit has ended,
only from those who came through the waiting room, a whole number from 1 to 5 and nothing
else; a second tap replaces the first; one row per participant for the quality report."""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from extensions import db
from tests import factories
from tests.integration.test_visit_realtime import patient_socket, staff_socket
from visits import presence
from visits.ratings import VisitRating


@pytest.fixture
def visit(app):
    presence.reset_for_tests()
    with app.app_context():
        yield factories.make_visit()


def ratings(app) -> list[tuple]:
    with app.app_context():
        return [(r.appointment_id, r.participant_id, r.role, r.score) for r in
                db.session.execute(sa.select(VisitRating).order_by(VisitRating.id)).scalars()]


def test_a_patient_rates_the_visit_once_it_has_ended(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    early = patient.emit("rate_visit", {"score": 5}, callback=True)
    assert staff.emit("end_visit", callback=True) == {"ok": True}

    first = patient.emit("rate_visit", {"score": 2}, callback=True)
    second = patient.emit("rate_visit", {"score": 4}, callback=True)

    assert early["ok"] is False and early["code"] == "rating_not_open"
    assert first == {"ok": True} and second == {"ok": True}
    assert ratings(app) == [(visit.appointment.id, visit.patient.id, "patient", 4)]


def test_a_guest_may_rate_and_the_staff_may_not(app, visit):
    guest = factories.add_participant(visit, "guest")
    staff = staff_socket(app, visit.provider)
    guest_page = patient_socket(app, guest)
    staff.emit("end_visit", callback=True)

    by_guest = guest_page.emit("rate_visit", {"score": 3}, callback=True)
    by_staff = staff.emit("rate_visit", {"score": 1}, callback=True)

    assert by_guest == {"ok": True}
    assert by_staff["ok"] is False and by_staff["code"] == "not_in_visit"
    assert ratings(app) == [(visit.appointment.id, guest.id, "guest", 3)]


@pytest.mark.parametrize("payload", [
    {"score": 0}, {"score": 6}, {"score": 4.5}, {"score": "5"}, {"score": True}, {},
    {"score": None},
])
def test_only_a_whole_score_from_1_to_5_is_taken(app, visit, payload):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.emit("end_visit", callback=True)

    reply = patient.emit("rate_visit", payload, callback=True)

    assert reply["ok"] is False and reply["code"] == "invalid_payload"
    assert ratings(app) == []


def test_a_text_field_is_never_stored(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.emit("end_visit", callback=True)

    reply = patient.emit("rate_visit", {"score": 5, "comment": "call me at 555"}, callback=True)

    assert reply == {"ok": True}
    assert {c.name for c in VisitRating.__table__.columns} == {
        "id", "appointment_id", "participant_id", "role", "score", "created_at"}
