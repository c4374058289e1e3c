"""What a socket may send: one schema per event with exact types, handler errors logged
without the payload, the per-socket event limit, and join-token guesses counted with the
``/j/<token>`` ones (Flask-SocketIO's test client; the flood itself is measured against a
real server in test_realtime_flood.py)."""
from __future__ import annotations

import logging
import time

import pytest

from extensions import db, socketio
from tests import factories
from tests.conftest import build_app, dispose_app
from tests.integration.test_visit_realtime import last, patient_socket, staff_socket
from visits import presence
from visits.models import Participant

MAX_ID = 2**63 - 1


@pytest.fixture
def visit(app):
    presence.reset_for_tests()
    with app.app_context():
        yield factories.make_visit()
    presence.reset_for_tests()


def _admitted(participant_id: int) -> bool:
    db.session.expire_all()
    return db.session.get(Participant, participant_id).admitted_at is not None


def test_every_event_has_a_payload_schema(app):
    handlers = socketio.server.handlers["/"]

    unchecked = [name for name, handler in handlers.items()
                 if name not in {"connect", "disconnect"}
                 and getattr(handler, "payload_schema", None) is None]

    assert "admit" in handlers and "signal" in handlers
    assert unchecked == []


@pytest.mark.parametrize("participant_id", [True, 1.0, "2", 0, -1, MAX_ID + 1, 10**30, None,
                                            [2]])
def test_admit_refuses_anything_but_a_whole_number_id(app, visit, participant_id):
    staff = staff_socket(app, visit.provider)
    patient_socket(app, visit.patient)

    reply = staff.emit("admit", {"participant_id": participant_id}, callback=True)

    assert reply["ok"] is False and reply["code"] == "invalid_payload"
    assert reply["detail"].startswith("participant_id: ")
    assert not _admitted(visit.patient.id) and not _admitted(visit.provider.id)


def test_an_id_beyond_any_row_is_a_plain_not_found(app, visit):
    staff = staff_socket(app, visit.provider)

    reply = staff.emit("admit", {"participant_id": MAX_ID}, callback=True)

    assert reply == {"ok": False, "code": "not_found", "error": "That person is not in this visit."}


@pytest.mark.parametrize("event, payload", [
    ("set_lobby_note", {"text": 42}),
    ("set_lobby_note", {"text": "x" * 2001}),
    ("add_participant", {"role": ["guest"], "display_name": "Maria"}),
    ("call_quality", {"rtt_ms": "fast"}),
    ("call_quality", {"packet_loss_pct": True}),
    ("signal", {"to": 12, "candidate": {"candidate": "x"}}),
    ("signal", {"to": "sid", "description": {"type": "hello", "sdp": "v=0"}}),
    ("signal", {"to": "sid", "candidate": {"candidate": "x", "sdpMLineIndex": True}}),
    ("get_visit_state", "everything"),
    ("ping_server", [1, 2, 3]),
])
def test_each_event_refuses_payloads_of_the_wrong_shape(app, visit, event, payload):
    staff = staff_socket(app, visit.provider)
    staff.emit("call_join", callback=True)

    reply = staff.emit(event, payload, callback=True)

    assert reply["ok"] is False and reply["code"] == "invalid_payload"


def test_events_without_fields_accept_nothing_or_an_empty_object(app, visit):
    staff = staff_socket(app, visit.provider)

    assert staff.emit("get_visit_state", callback=True)["ok"] is True
    assert staff.emit("get_visit_state", {}, callback=True)["ok"] is True
    assert staff.emit("ping_server", callback=True)["server_time_ms"] > 0
    assert staff.emit("ping_server", {"sent_at": 1}, callback=True)["server_time_ms"] > 0


def test_a_handler_error_logs_the_event_and_error_class_never_the_payload(app, visit, caplog):
    @socketio.on("explode_for_test")
    def explode(data=None):
        raise RuntimeError(f"statement failed with parameters {data}")

    staff = staff_socket(app, visit.provider)
    caplog.set_level(logging.INFO)

    reply = staff.emit("explode_for_test", {"secret": "TOKEN-abc123"}, callback=True)

    assert reply == {"ok": False, "code": "server_error",
                     "error": "Something went wrong. Please try again."}
    failed = [r for r in caplog.records if r.getMessage() == "socket handler failed"]
    assert len(failed) == 1
    assert failed[0].event == "explode_for_test" and failed[0].error == "RuntimeError"
    assert any("explode" in frame for frame in failed[0].where)
    assert failed[0].exc_info is None
    assert "TOKEN-abc123" not in repr([vars(record) for record in caplog.records])
    assert "TOKEN-abc123" not in caplog.text


# --- the per-socket limit -----------------------------------------------------------------

@pytest.fixture
def limited_app(tmp_path, monkeypatch):
    # Four tokens: the connect and three events.
    application = build_app(tmp_path, monkeypatch, SANDBOX=False, SOCKET_EVENT_RATE=0.01,
                            SOCKET_EVENT_BURST=4, SOCKET_EVENT_DROP_LIMIT=2)
    yield application
    dispose_app(application)


def test_events_beyond_the_burst_are_dropped_and_the_socket_is_told(limited_app):
    socket = socketio.test_client(limited_app)
    other = socketio.test_client(limited_app)

    replies = [socket.emit("ping_server", {}, callback=True) for _ in range(4)]

    assert [bool(reply) for reply in replies] == [True, True, True, False]
    told = last(socket.get_received(), "rate_limited")
    assert told is not None and told["retry_after_ms"] > 0
    assert other.emit("ping_server", {}, callback=True)["server_time_ms"] > 0
    assert socket.is_connected()


def test_a_socket_that_keeps_sending_past_its_limit_is_disconnected(limited_app, caplog):
    caplog.set_level(logging.INFO)
    socket = socketio.test_client(limited_app)

    for _ in range(6):
        socket.emit("ping_server", {}, callback=True)
    deadline = time.monotonic() + 5
    while socket.is_connected() and time.monotonic() < deadline:
        time.sleep(0.01)  # the disconnect runs in a background task

    assert not socket.is_connected()
    assert any(r.getMessage() == "socket disconnected for flooding" for r in caplog.records)


# --- join-token guesses -------------------------------------------------------------------

@pytest.fixture
def guess_app(tmp_path, monkeypatch):
    application = build_app(tmp_path, monkeypatch, SANDBOX=False,
                            JOIN_LINK_RATE_LIMIT="3 per minute")
    presence.reset_for_tests()
    yield application
    presence.reset_for_tests()
    dispose_app(application)


def test_socket_guesses_count_with_link_guesses_and_a_valid_token_always_connects(guess_app):
    client = guess_app.test_client()
    with guess_app.app_context():
        visit = factories.make_visit()
        token = factories.join_token(visit.patient)
        # Built by the Flask client, the socket's environ has its address (127.0.0.1).
        guesses = [socketio.test_client(guess_app, flask_test_client=client,
                                        auth={"join_token": f"guess-{n}-{'x' * 30}"})
                   for n in range(2)]

        over = client.get(f"/j/guess-web-{'y' * 30}")
        after = client.get(f"/j/guess-web2-{'y' * 30}")
        valid_socket = socketio.test_client(guess_app, flask_test_client=client,
                                            auth={"join_token": token})
        valid_link = client.get(f"/j/{token}")

        assert not any(guess.is_connected() for guess in guesses)
        assert over.status_code == 404  # the third failed guess: still within 3 a minute
        assert after.status_code == 429 and int(after.headers["Retry-After"]) > 0
        assert valid_socket.is_connected()
        assert valid_link.status_code == 303 and valid_link.headers["Location"] == "/join"


def test_a_valid_link_opens_after_a_guessing_run_from_the_same_address(guess_app):
    client = guess_app.test_client()
    with guess_app.app_context():
        visit = factories.make_visit()
        token = factories.join_token(visit.patient)
        statuses = [client.get(f"/j/guess-{n}-{'z' * 30}").status_code for n in range(5)]

        opened = client.get(f"/j/{token}")

        assert statuses == [404, 404, 404, 429, 429]
        assert opened.status_code == 303
        assert client.get("/join").status_code == 200
