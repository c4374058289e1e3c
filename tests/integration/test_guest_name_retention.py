"""Guests' and interpreters' names are forgotten once their visit is over; providers'
names stay and the patient never has one."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from extensions import db
from tests import factories
from visits import calls
from visits.models import Participant, PresenceState
from visits.retention import forget_guest_names


@pytest.fixture
def app(app_each_db):
    with app_each_db.app_context():
        yield app_each_db


def invite(visit, role: str, name: str, now: datetime) -> int:
    participant, _token = calls.add_participant(visit.appointment.id, visit.provider.id, role,
                                                name, now)
    db.session.commit()
    return participant.id


def names(*ids: int) -> list[str | None]:
    db.session.expire_all()
    return [db.session.get(Participant, i).display_name for i in ids]


def test_names_stay_while_the_visit_can_still_be_joined(app):
    now = datetime.now(timezone.utc)
    visit = factories.make_visit()
    guest = invite(visit, "guest", "Maria Example", now)

    assert forget_guest_names(now) == 0

    assert names(guest, visit.provider.id) == ["Maria Example", "Dr. Quinn Example"]


def test_an_ended_visit_forgets_its_guests_and_interpreters_but_not_its_provider(app):
    now = datetime.now(timezone.utc)
    visit = factories.make_visit()
    guest = invite(visit, "guest", "Maria Example", now)
    interpreter = invite(visit, "interpreter", "Ana Example", now)
    other = factories.make_visit(ehr_id="appt-2")
    other_guest = invite(other, "guest", "Still Here", now)
    visit.appointment.ended_at = now
    db.session.commit()

    assert forget_guest_names(now) == 2

    assert names(guest, interpreter, visit.provider.id, visit.patient.id, other_guest) == [
        None, None, "Dr. Quinn Example", None, "Still Here"]


def test_names_go_once_no_join_link_can_open_the_visit(app):
    now = datetime.now(timezone.utc)
    visit = factories.make_visit()
    guest = invite(visit, "guest", "Maria Example", now)

    assert forget_guest_names(now + timedelta(days=2)) == 1

    assert names(guest) == [None]


def test_a_guest_still_in_a_long_visit_keeps_their_name_until_they_leave(app):
    now = datetime.now(timezone.utc)
    visit = factories.make_visit()
    guest = invite(visit, "guest", "Maria Example", now)
    participant = db.session.get(Participant, guest)
    participant.presence = PresenceState.CONNECTED
    db.session.commit()
    later = now + timedelta(days=2)  # every link has run out; the visit runs on

    assert forget_guest_names(later) == 0
    assert names(guest) == ["Maria Example"]

    participant = db.session.get(Participant, guest)
    participant.presence = PresenceState.DISCONNECTED
    db.session.commit()

    assert forget_guest_names(later) == 1
    assert names(guest) == [None]
