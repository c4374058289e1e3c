"""Live presence, the lobby and admit over the real Socket.IO protocol (Flask-SocketIO's
test client), including what a patient or an outsider must never be able to do."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from ehr.models import WritebackOutbox
from extensions import db, socketio
from tests import factories
from visits import presence
from visits.events import presence_upkeep
from visits.models import LiveSocket, Participant, PresenceEvent, ServerProcess


@pytest.fixture
def visit(app):
    with app.app_context():
        made = factories.make_visit()
        yield made


def staff_socket(app, participant, appointment_id=None):
    """A provider's visit-page socket: HTTP session from a launch, auth naming the visit."""
    client = app.test_client()
    raw = factories.make_launch_session(participant)
    with client.session_transaction() as session:
        session["launch_sessions"] = {str(participant.appointment_id): raw}
    return socketio.test_client(app, flask_test_client=client,
                                auth={"visit": appointment_id or participant.appointment_id})


def patient_socket(app, participant):
    return socketio.test_client(app, auth={"join_token": factories.join_token(participant)})


def last(received, name):
    matching = [m["args"][0] for m in received if m["name"] == name]
    return matching[-1] if matching else None


def presence_of(snapshot, participant):
    return next(p["presence"] for p in snapshot["participants"] if p["id"] == participant.id)


def upkeep_after(app, seconds):
    """Run the presence sweep as if ``seconds`` had passed (no sleeping in tests)."""
    later = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    app.config["PRESENCE_GRACE_SECONDS"] = 5
    presence.heartbeat(later)
    presence.reap_dead_processes(later, app.config["PROCESS_TIMEOUT_SECONDS"])
    changes = presence.finalize_disconnects(later, app.config["PRESENCE_GRACE_SECONDS"])
    from visits import realtime
    for appointment_id in {c.appointment_id for c in changes}:
        realtime.push_visit(appointment_id, later)
    return changes


def test_staff_sees_patient_arrive_in_lobby_and_presence(app, visit):
    staff = staff_socket(app, visit.provider)
    staff.get_received()

    patient = patient_socket(app, visit.patient)

    snapshot = last(staff.get_received(), "visit_state")
    assert presence_of(snapshot, visit.patient) == "connected"
    assert [entry["participant_id"] for entry in snapshot["lobby"]] == [visit.patient.id]
    assert last(patient.get_received(), "lobby_state")["state"] == "waiting"


def test_disconnect_is_final_only_after_grace_and_is_recorded(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.get_received()

    patient.disconnect()
    too_early = upkeep_after(app, 1)
    assert too_early == []
    assert last(staff.get_received(), "visit_state") is None
    upkeep_after(app, 6)

    snapshot = last(staff.get_received(), "visit_state")
    assert presence_of(snapshot, visit.patient) == "disconnected"
    kinds = db.session.execute(sa.select(PresenceEvent.kind).filter_by(
        participant_id=visit.patient.id).order_by(PresenceEvent.id)).scalars().all()
    assert kinds == ["connected", "disconnected"]
    assert snapshot["lobby"] == []


def test_reconnect_within_grace_keeps_presence_and_lobby_place(app, visit):
    staff = staff_socket(app, visit.provider)
    first = patient_socket(app, visit.patient)
    entered = last(first.get_received(), "lobby_state")["waiting_since"]

    first.disconnect()
    second = patient_socket(app, visit.patient)
    upkeep_after(app, 30)

    kinds = db.session.execute(sa.select(PresenceEvent.kind).filter_by(
        participant_id=visit.patient.id)).scalars().all()
    assert kinds == ["connected"]
    assert last(second.get_received(), "lobby_state")["waiting_since"] == entered
    assert presence_of(last(staff.get_received(), "visit_state"), visit.patient) == "connected"


def test_two_tabs_one_closed_still_connected(app, visit):
    staff_socket(app, visit.provider)
    tab_one = patient_socket(app, visit.patient)
    patient_socket(app, visit.patient)

    tab_one.disconnect()
    upkeep_after(app, 60)

    assert db.session.get(Participant, visit.patient.id).presence == "connected"


def test_provider_admits_patient_and_everyone_hears(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    patient.get_received()

    reply = staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)

    assert reply == {"ok": True}
    assert last(patient.get_received(), "lobby_state")["state"] == "admitted"
    snapshot = last(staff.get_received(), "visit_state")
    assert snapshot["lobby"] == []
    assert next(p for p in snapshot["participants"] if p["id"] == visit.patient.id)["admitted"]


def test_admit_all_and_end_visit(app, visit):
    guest = factories.add_participant(visit, "guest")
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    guest_socket = patient_socket(app, guest)

    assert staff.emit("admit_all", callback=True) == {"ok": True}
    assert last(guest_socket.get_received(), "lobby_state")["state"] == "admitted"
    assert staff.emit("end_visit", callback=True) == {"ok": True}

    assert last(patient.get_received(), "lobby_state")["state"] == "ended"
    assert last(staff.get_received(), "visit_state")["ended"] is True
    assert staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)["ok"] is False


def test_every_change_queues_an_audit_event(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    patient.disconnect()
    upkeep_after(app, 6)
    staff.emit("end_visit", callback=True)

    rows = db.session.execute(sa.select(WritebackOutbox).filter_by(
        appointment_id=visit.appointment.id)).scalars().all()

    identifiers = sorted(row.business_identifier for row in rows)
    assert len(rows) == 5  # provider connected, patient connected, admitted, disconnected, ended
    assert len(set(identifiers)) == 5
    assert all(row.resource_type == "AuditEvent" and row.status == "pending" for row in rows)


# --- attacks ---------------------------------------------------------------------------

def test_socket_with_bad_credentials_is_refused(app, visit):
    wrong_token = socketio.test_client(app, auth={"join_token": "guessed-token"})
    no_launch = socketio.test_client(app, auth={"visit": visit.appointment.id})

    assert not wrong_token.is_connected()
    assert not no_launch.is_connected()


def test_anonymous_socket_hears_nothing_and_can_do_nothing(app, visit):
    anonymous = socketio.test_client(app)
    patient_socket(app, visit.patient)

    reply = anonymous.emit("admit", {"participant_id": visit.patient.id}, callback=True)

    assert reply["ok"] is False
    assert anonymous.get_received() == []
    assert db.session.get(Participant, visit.patient.id).admitted_at is None


def test_patient_cannot_admit_or_end(app, visit):
    staff_socket(app, visit.provider)
    guest = factories.add_participant(visit, "guest")
    patient_socket(app, guest)
    patient = patient_socket(app, visit.patient)

    admit = patient.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    admit_other = patient.emit("admit", {"participant_id": guest.id}, callback=True)
    end = patient.emit("end_visit", callback=True)

    assert admit["ok"] is False and admit_other["ok"] is False and end["ok"] is False
    db.session.expire_all()
    assert db.session.get(Participant, visit.patient.id).admitted_at is None
    assert db.session.get(Participant, guest.id).admitted_at is None
    assert visit.appointment.ended_at is None


def test_patient_never_receives_staff_data_or_other_visits(app, visit):
    other = factories.make_visit(visit.appointment.endpoint, ehr_id="appt-2")
    patient = patient_socket(app, visit.patient)
    other_staff = staff_socket(app, other.provider)
    patient_socket(app, other.patient)
    other_staff.emit("admit", {"participant_id": other.patient.id}, callback=True)

    received = patient.get_received()

    assert {m["name"] for m in received} == {"lobby_state"}
    assert all(set(m["args"][0]) == {"state", "server_time", "waiting_since", "note",
                                     "provider_present"} for m in received)


def test_staff_of_one_visit_cannot_enter_or_act_on_another(app, visit):
    other = factories.make_visit(visit.appointment.endpoint, ehr_id="appt-2")
    patient_socket(app, other.patient)

    crossing = staff_socket(app, visit.provider, appointment_id=other.appointment.id)
    mine = staff_socket(app, visit.provider)
    reply = mine.emit("admit", {"participant_id": other.patient.id}, callback=True)

    assert not crossing.is_connected()
    assert reply["ok"] is False
    assert db.session.get(Participant, other.patient.id).admitted_at is None
    assert all(m["args"][0]["appointment_id"] == visit.appointment.id
               for m in mine.get_received() if m["name"] == "visit_state")


def test_interpreter_by_link_waits_and_cannot_admit(app, visit):
    interpreter = factories.add_participant(visit, "interpreter", display_name="Ana Intérprete")
    staff = staff_socket(app, visit.provider)
    socket = patient_socket(app, interpreter)
    patient_socket(app, visit.patient)

    reply = socket.emit("admit", {"participant_id": visit.patient.id}, callback=True)

    assert reply["ok"] is False
    assert {m["name"] for m in socket.get_received()} == {"lobby_state"}
    lobby = last(staff.get_received(), "visit_state")["lobby"]
    assert {entry["participant_id"] for entry in lobby} == {interpreter.id, visit.patient.id}


def test_sockets_of_a_dead_process_are_cleared(app, visit):
    staff = staff_socket(app, visit.provider)
    long_ago = datetime.now(timezone.utc) - timedelta(minutes=5)
    db.session.add(ServerProcess(process_id="dead-host:1:abc", started_at=long_ago,
                                 heartbeat_at=long_ago))
    db.session.add(LiveSocket(sid="orphan-sid", participant_id=visit.patient.id,
                              process_id="dead-host:1:abc", connected_at=long_ago))
    db.session.execute(sa.update(Participant).where(Participant.id == visit.patient.id)
                       .values(presence="connected", presence_since=long_ago))
    db.session.commit()
    staff.get_received()

    upkeep_after(app, 0)      # reaps the orphaned socket: the grace period starts now
    upkeep_after(app, 6)      # grace over: final

    assert db.session.get(LiveSocket, "orphan-sid") is None
    assert presence_of(last(staff.get_received(), "visit_state"), visit.patient) == "disconnected"


def test_periodic_task_runs_in_app_context(app, visit):
    patient = patient_socket(app, visit.patient)
    patient.disconnect()
    app.config["PRESENCE_GRACE_SECONDS"] = 0

    with app.app_context():
        presence_upkeep()

    assert db.session.get(Participant, visit.patient.id).presence == "disconnected"


# --- lobby note, guests, the call -------------------------------------------------------

def test_lobby_note_reaches_waiting_patient(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)

    reply = staff.emit("set_lobby_note", {"text": "  Running 10 minutes late  "}, callback=True)

    assert reply == {"ok": True}
    assert last(patient.get_received(), "lobby_state")["note"] == "Running 10 minutes late"
    assert patient.emit("set_lobby_note", {"text": "I'm the boss"}, callback=True)["ok"] is False


def test_provider_adds_guest_who_joins_by_link_and_waits(app, visit):
    staff = staff_socket(app, visit.provider)

    reply = staff.emit("add_participant", {"role": "guest", "display_name": "Maria (daughter)"},
                       callback=True)
    token = reply["link"].rsplit("/j/", 1)[1]
    guest = socketio.test_client(app, auth={"join_token": token})

    assert reply["ok"] is True
    assert last(guest.get_received(), "lobby_state")["state"] == "waiting"
    snapshot = last(staff.get_received(), "visit_state")
    assert {"role": "guest", "display_name": "Maria (daughter)", "presence": "connected"}.items() \
        <= next(p for p in snapshot["participants"] if p["id"] == reply["participant_id"]).items()
    bad = staff.emit("add_participant", {"role": "provider", "display_name": "X"}, callback=True)
    assert bad["ok"] is False


def test_call_join_needs_admission_and_relays_only_within_the_call(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)

    early = patient.emit("call_join", callback=True)
    staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    provider_join = staff.emit("call_join", callback=True)
    staff.get_received()
    patient_join = patient.emit("call_join", callback=True)
    joined = last(staff.get_received(), "call_peer_joined")
    offer = staff.emit("signal", {"to": joined["sid"], "description": {"type": "offer",
                                                                      "sdp": "v=0"}},
                       callback=True)
    relayed = last(patient.get_received(), "signal")

    assert early["ok"] is False
    assert provider_join["ok"] and patient_join["ok"]
    assert joined["participant_id"] == visit.patient.id
    assert offer == {"ok": True}
    assert relayed["from"] == provider_join["sid"]
    assert relayed["description"]["type"] == "offer"


def test_signal_to_a_socket_of_another_visit_is_dropped(app, visit):
    other = factories.make_visit(visit.appointment.endpoint, ehr_id="appt-2")
    other_staff = staff_socket(app, other.provider)
    other_sid = other_staff.emit("call_join", callback=True)["sid"]
    staff = staff_socket(app, visit.provider)
    staff.emit("call_join", callback=True)
    other_staff.get_received()

    reply = staff.emit("signal", {"to": other_sid, "candidate": {"candidate": "x"}},
                       callback=True)

    assert reply["ok"] is False
    assert last(other_staff.get_received(), "signal") is None


def test_quality_samples_are_stored_and_throttled(app, visit):
    from visits.models import CallQualitySample

    staff = staff_socket(app, visit.provider)
    staff.emit("call_join", callback=True)

    first = staff.emit("call_quality", {"rtt_ms": 42.5, "jitter_ms": 3, "packet_loss_pct": 0.5,
                                        "bitrate_in_kbps": 900, "bitrate_out_kbps": "lots"},
                       callback=True)
    second = staff.emit("call_quality", {"rtt_ms": 40}, callback=True)

    rows = db.session.execute(sa.select(CallQualitySample)).scalars().all()
    assert first == {"ok": True} and second == {"ok": False}
    assert [(r.rtt_ms, r.bitrate_out_kbps) for r in rows] == [(42.5, None)]


def test_ice_servers_carry_time_limited_turn_credentials(app, visit):
    import base64
    import hashlib
    import hmac

    app.config.update(STUN_URLS="stun:127.0.0.1:3478", TURN_URLS="turn:127.0.0.1:3478",
                      TURN_SECRET="coturn-secret", TURN_TTL_SECONDS=600)
    staff = staff_socket(app, visit.provider)

    servers = staff.emit("call_join", callback=True)["ice_servers"]

    turn = servers[1]
    expiry = int(turn["username"].split(":")[0])
    expected = base64.b64encode(hmac.new(b"coturn-secret", turn["username"].encode(),
                                         hashlib.sha1).digest()).decode()
    assert servers[0] == {"urls": ["stun:127.0.0.1:3478"]}
    assert turn["credential"] == expected
    assert 0 < expiry - datetime.now(timezone.utc).timestamp() <= 600


def test_patient_sees_whether_a_provider_is_there(app, visit):
    alone = patient_socket(app, visit.patient)
    assert last(alone.get_received(), "lobby_state")["provider_present"] is False

    staff_socket(app, visit.provider)

    assert last(alone.get_received(), "lobby_state")["provider_present"] is True


def test_any_provider_on_the_appointment_may_admit(app, visit):
    second = factories.add_participant(visit, "provider", "Practitioner/second",
                                       display_name="Dr. Second")
    staff_socket(app, visit.provider)
    other = staff_socket(app, second)
    patient = patient_socket(app, visit.patient)

    reply = other.emit("admit", {"participant_id": visit.patient.id}, callback=True)

    assert reply == {"ok": True}
    assert last(patient.get_received(), "lobby_state")["state"] == "admitted"
