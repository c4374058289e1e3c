"""Chat in a visit over the real Socket.IO protocol: who writes, who reads, the lobby,
limits, and deletion when the visit ends."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tests import factories
from tests.integration.test_visit_realtime import patient_socket, staff_socket
from visits import chat, presence


@pytest.fixture
def visit(app):
    presence.reset_for_tests()
    chat.reset_for_tests()
    with app.app_context():
        yield factories.make_visit()
    presence.reset_for_tests()
    chat.reset_for_tests()


def heard(client):
    return [m["args"][0]["text"] for m in client.get_received() if m["name"] == "chat_message"]


def test_a_providers_message_reaches_the_lobby_and_a_waiting_patient_cannot_write(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    patient.get_received()

    sent = staff.emit("chat_send", {"text": "  Running 10 minutes late  "}, callback=True)
    refused = patient.emit("chat_send", {"text": "OK"}, callback=True)

    assert sent["ok"] and sent["message"]["text"] == "Running 10 minutes late"
    assert sent["message"]["to_lobby"] is True
    assert heard(patient) == ["Running 10 minutes late"]
    assert refused["ok"] is False and refused["code"] == "chat_not_admitted"


def test_people_let_in_write_to_each_other_and_the_lobby_does_not_read_it(app, visit):
    guest = factories.add_participant(visit, "guest", display_name="Sam Guest")
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    waiting_guest = patient_socket(app, guest)
    staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    staff.get_received(), patient.get_received(), waiting_guest.get_received()

    reply = patient.emit("chat_send", {"text": "<b>Hello</b> & welcome"}, callback=True)

    assert reply["ok"]
    assert reply["message"]["name"] is None  # a patient's name is never carried
    assert heard(staff) == ["<b>Hello</b> & welcome"]  # as typed: pages write textContent
    assert heard(patient) == ["<b>Hello</b> & welcome"]
    assert heard(waiting_guest) == []
    assert waiting_guest.emit("chat_history", callback=True)["messages"] == []
    history = staff.emit("chat_history", callback=True)["messages"]
    assert [m["text"] for m in history] == ["<b>Hello</b> & welcome"]


def test_history_after_a_reload_and_in_order(app, visit):
    staff = staff_socket(app, visit.provider)
    staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    staff.emit("chat_send", {"text": "one"}, callback=True)
    patient_socket(app, visit.patient).emit("chat_send", {"text": "two"}, callback=True)

    again = patient_socket(app, visit.patient)
    history = again.emit("chat_history", callback=True)

    assert [m["text"] for m in history["messages"]] == ["one", "two"]


@pytest.mark.parametrize(("text", "code"), [
    ("   ", "chat_empty"), ("x" * 1001, "chat_too_long"), ("x" * 2001, "invalid_payload")])
def test_empty_or_long_messages_are_refused(app, visit, text, code):
    staff = staff_socket(app, visit.provider)

    reply = staff.emit("chat_send", {"text": text}, callback=True)

    assert reply["ok"] is False and reply["code"] == code


def test_a_fast_writer_is_slowed_down_in_their_language(app, visit):
    client = app.test_client()
    with client.session_transaction() as session:
        session["lang"] = "es"
    staff = staff_socket(app, visit.provider, client=client)

    replies = [staff.emit("chat_send", {"text": f"m{n}"}, callback=True) for n in range(7)]

    assert [r["ok"] for r in replies] == [True] * 5 + [False] * 2
    assert replies[-1]["code"] == "chat_too_fast"
    assert replies[-1]["error"] == "Está enviando mensajes demasiado rápido. Espere un momento."


def test_outsiders_neither_write_nor_read(app, visit):
    from extensions import socketio

    staff_socket(app, visit.provider).emit("chat_send", {"text": "private"}, callback=True)
    anonymous = socketio.test_client(app)

    assert anonymous.emit("chat_send", {"text": "hi"}, callback=True)["ok"] is False
    assert anonymous.emit("chat_history", callback=True)["ok"] is False
    assert anonymous.get_received() == []


def test_messages_are_deleted_when_the_visit_ends(app, visit):
    staff = staff_socket(app, visit.provider)
    staff.emit("chat_send", {"text": "before the end"}, callback=True)

    staff.emit("end_visit", callback=True)

    assert chat.history(visit.provider, staff=True) == []
    refused = staff.emit("chat_send", {"text": "after"}, callback=True)
    assert refused["ok"] is False


def test_the_sweep_deletes_visits_ended_elsewhere_and_idle_ones(app, visit):
    other = factories.make_visit(ehr_id="appt-2")
    staff_socket(app, visit.provider).emit("chat_send", {"text": "a"}, callback=True)
    staff_socket(app, other.provider).emit("chat_send", {"text": "b"}, callback=True)
    other.appointment.ended_at = datetime.now(timezone.utc)  # by another process
    from extensions import db
    db.session.commit()

    chat.sweep(datetime.now(timezone.utc))
    assert [m.text for m in chat.history(visit.provider, staff=True)] == ["a"]
    chat.sweep(datetime.now(timezone.utc) + timedelta(hours=chat.IDLE_HOURS + 1))
    assert chat.history(visit.provider, staff=True) == []
