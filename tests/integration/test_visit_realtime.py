"""Live presence, the lobby and admit over the real Socket.IO protocol (Flask-SocketIO's
test client), including what a patient or an outsider must never be able to do."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from ehr.models import WritebackOutbox
from extensions import db, socketio
from tests import factories
from visits import presence, writer
from visits.events import presence_upkeep
from visits.models import LiveSocket, Participant, PresenceEvent, ServerProcess


@pytest.fixture
def app(app_each_db):
    """Every test here on SQLite, and on PostgreSQL too when DATABASE_URL is set: the
    presence writer's batched statements differ by database."""
    return app_each_db


@pytest.fixture
def visit(app):
    presence.reset_for_tests()
    with app.app_context():
        made = factories.make_visit()
        yield made
    presence.reset_for_tests()


class StaffPage:
    """A provider's visit-page socket, and what the page shows: the last ``visit_state``
    with the ``presence`` deltas after it applied, as provider_launch/static/visit.js does."""

    def __init__(self, client):
        self.client = client
        self.snapshot = None
        self.deltas = []

    def emit(self, *args, **kwargs):
        return self.client.emit(*args, **kwargs)

    def is_connected(self):
        return self.client.is_connected()

    def disconnect(self):
        self.client.disconnect()

    def get_received(self):
        received = self.client.get_received()
        for message in received:
            if message["name"] == "visit_state":
                self.snapshot = message["args"][0]
            elif message["name"] == "presence" and self.snapshot is not None:
                self._apply(message["args"][0])
                self.deltas.append(message["args"][0])
        return received

    def _apply(self, delta):
        person = next((p for p in self.snapshot["participants"]
                       if p["id"] == delta["participant_id"]), None)
        if person is not None:
            person["presence"], person["presence_since"] = delta["presence"], delta["since"]
        lobby = [e for e in self.snapshot["lobby"] if e["participant_id"] != delta["participant_id"]]
        if delta["presence"] != "disconnected":
            kept = next((e for e in self.snapshot["lobby"]
                         if e["participant_id"] == delta["participant_id"]), None)
            if delta.get("lobby_entered_at"):
                kept = {"participant_id": delta["participant_id"],
                        "role": person["role"] if person else None,
                        "entered_at": delta["lobby_entered_at"]}
            if kept:
                lobby.append(kept)
        self.snapshot["lobby"] = sorted(lobby, key=lambda e: e["entered_at"])

    def picture(self):
        self.get_received()
        return self.snapshot

    def presence_of(self, participant):
        return next(p["presence"] for p in self.picture()["participants"]
                    if p["id"] == participant.id)

    def lobby_ids(self):
        return [entry["participant_id"] for entry in self.picture()["lobby"]]


def staff_socket(app, participant, appointment_id=None, client=None):
    """A provider's visit-page socket: HTTP session from a launch, auth naming the visit."""
    client = client or app.test_client()
    raw = factories.make_launch_session(participant)
    with client.session_transaction() as session:
        session["launch_sessions"] = {str(participant.appointment_id): raw}
    return StaffPage(socketio.test_client(app, flask_test_client=client,
                                          auth={"visit": appointment_id or
                                                participant.appointment_id}))


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
    presence.queue_due_finalizations(later, app.config["PRESENCE_GRACE_SECONDS"])
    presence.finalize_overdue(later, app.config["PRESENCE_GRACE_SECONDS"])
    return writer.flush(later).disconnected


def kinds_of(participant):
    return db.session.execute(sa.select(PresenceEvent.kind).filter_by(
        participant_id=participant.id).order_by(PresenceEvent.id)).scalars().all()


def test_staff_sees_patient_arrive_in_lobby_and_presence(app, visit):
    staff = staff_socket(app, visit.provider)
    staff.get_received()

    patient = patient_socket(app, visit.patient)

    assert staff.presence_of(visit.patient) == "connected"
    assert staff.lobby_ids() == [visit.patient.id]
    assert last(patient.get_received(), "lobby_state")["state"] == "waiting"


def test_staff_hear_connection_lost_at_once_and_left_only_after_grace(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.get_received()

    patient.disconnect()

    assert staff.presence_of(visit.patient) == "reconnecting"
    assert staff.lobby_ids() == [visit.patient.id]  # keeps their place while reconnecting
    assert upkeep_after(app, 1) == []
    assert staff.presence_of(visit.patient) == "reconnecting"
    upkeep_after(app, 6)
    assert staff.presence_of(visit.patient) == "disconnected"
    assert kinds_of(visit.patient) == ["connected", "disconnected"]
    assert staff.lobby_ids() == []


def test_a_new_staff_page_sees_a_reconnecting_participant_as_such(app, visit):
    patient = patient_socket(app, visit.patient)
    patient.disconnect()

    staff = staff_socket(app, visit.provider)

    assert staff.presence_of(visit.patient) == "reconnecting"


def test_disconnect_is_final_only_after_grace_and_is_recorded(app, visit):
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    staff.get_received()

    patient.disconnect()
    too_early = upkeep_after(app, 1)
    assert too_early == []
    upkeep_after(app, 6)

    snapshot = staff.picture()
    assert presence_of(snapshot, visit.patient) == "disconnected"
    assert kinds_of(visit.patient) == ["connected", "disconnected"]
    assert snapshot["lobby"] == []
    assert db.session.get(Participant, visit.patient.id).presence == "disconnected"


def test_reconnect_within_grace_keeps_presence_and_lobby_place(app, visit):
    staff = staff_socket(app, visit.provider)
    first = patient_socket(app, visit.patient)
    entered = last(first.get_received(), "lobby_state")["waiting_since"]

    first.disconnect()
    second = patient_socket(app, visit.patient)
    upkeep_after(app, 30)

    assert kinds_of(visit.patient) == ["connected"]
    assert last(second.get_received(), "lobby_state")["waiting_since"] == entered
    assert staff.presence_of(visit.patient) == "connected"
    assert staff.picture()["lobby"][0]["entered_at"] == entered


def test_coming_back_after_a_final_disconnect_is_a_new_wait(app, visit):
    staff = staff_socket(app, visit.provider)
    first = patient_socket(app, visit.patient)
    entered = last(first.get_received(), "lobby_state")["waiting_since"]
    first.disconnect()
    upkeep_after(app, 6)

    second = patient_socket(app, visit.patient)

    again = last(second.get_received(), "lobby_state")["waiting_since"]
    assert again is not None and again != entered
    assert staff.picture()["lobby"][0]["entered_at"] == again


def test_a_second_tab_takes_over_and_the_first_is_told_and_closed(app, visit):
    staff = staff_socket(app, visit.provider)
    tab_one = patient_socket(app, visit.patient)
    entered = last(tab_one.get_received(), "lobby_state")["waiting_since"]
    staff.get_received()
    staff.deltas.clear()

    tab_two = patient_socket(app, visit.patient)
    upkeep_after(app, 60)

    assert not tab_one.is_connected()
    assert [m["name"] for m in tab_one.queue] == ["replaced"]  # told before the disconnect
    assert tab_two.is_connected()
    assert last(tab_two.get_received(), "lobby_state")["waiting_since"] == entered
    assert db.session.get(Participant, visit.patient.id).presence == "connected"
    assert kinds_of(visit.patient) == ["connected"]
    assert staff.presence_of(visit.patient) == "connected"
    assert staff.lobby_ids() == [visit.patient.id]
    assert [d["presence"] for d in staff.deltas] == []  # one person, still here: not news


def test_the_tab_that_took_over_leaving_is_a_normal_leave(app, visit):
    staff = staff_socket(app, visit.provider)
    patient_socket(app, visit.patient)
    tab_two = patient_socket(app, visit.patient)

    tab_two.disconnect()

    assert staff.presence_of(visit.patient) == "reconnecting"
    upkeep_after(app, 6)
    assert staff.presence_of(visit.patient) == "disconnected"
    assert kinds_of(visit.patient) == ["connected", "disconnected"]


def test_a_tab_in_the_call_that_is_taken_over_leaves_the_call(app, visit):
    staff = staff_socket(app, visit.provider)
    staff.emit("admit", {"participant_id": visit.patient.id}, callback=True)
    assert staff.emit("call_join", callback=True)["ok"]
    tab_one = patient_socket(app, visit.patient)
    joined = tab_one.emit("call_join", callback=True)
    staff.get_received()

    patient_socket(app, visit.patient)

    assert {"sid": joined["sid"]} in [m["args"][0] for m in staff.get_received()
                                      if m["name"] == "call_peer_left"]


def test_providers_may_keep_two_pages_open(app, visit):
    one = staff_socket(app, visit.provider)
    two = staff_socket(app, visit.provider)

    assert one.is_connected() and two.is_connected()
    assert "replaced" not in [m["name"] for m in one.client.get_received()]


def test_restart_shorter_than_grace_keeps_presence_and_sends_no_disconnect(app, visit):
    """The only server process dies with both sockets open; a new one starts and the pages
    reconnect: same lobby place, no "disconnected" recorded or owed to the EHR."""
    staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    entered = last(patient.get_received(), "lobby_state")["waiting_since"]
    presence.reset_for_tests()  # a new process: nothing in memory, a new process id

    staff = staff_socket(app, visit.provider)
    again = patient_socket(app, visit.patient)
    upkeep_after(app, 3)           # the old process is not taken for dead yet
    upkeep_after(app, 30)          # now it is: its sockets go, the new ones stay

    assert kinds_of(visit.patient) == ["connected"]
    assert kinds_of(visit.provider) == ["connected"]
    assert last(again.get_received(), "lobby_state")["waiting_since"] == entered
    assert staff.presence_of(visit.patient) == "connected"
    assert staff.picture()["lobby"][0]["entered_at"] == entered
    disconnects = db.session.execute(sa.select(WritebackOutbox.business_identifier).where(
        WritebackOutbox.business_identifier.like("participant-disconnected/%"))).all()
    assert disconnects == []


def test_restart_longer_than_grace_ends_presence_of_those_who_did_not_return(app, visit):
    staff_socket(app, visit.provider)
    patient_socket(app, visit.patient)
    presence.reset_for_tests()
    staff = staff_socket(app, visit.provider)  # only the provider comes back

    upkeep_after(app, 30)          # the old process is dead: the patient's grace starts
    upkeep_after(app, 36)

    assert kinds_of(visit.patient) == ["connected", "disconnected"]
    assert staff.presence_of(visit.patient) == "disconnected"


def test_batched_writer_records_the_same_as_immediate_writes(app, visit):
    """With a write delay, sockets are told at once and rows follow at the next flush."""
    app.config["PRESENCE_WRITE_DELAY_SECONDS"] = 10
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)

    assert staff.presence_of(visit.patient) == "connected"
    assert last(patient.get_received(), "lobby_state")["state"] == "waiting"
    assert writer.pending()
    writer.flush()

    db.session.expire_all()
    assert db.session.get(Participant, visit.patient.id).presence == "connected"
    assert kinds_of(visit.patient) == ["connected"]
    assert db.session.execute(sa.select(sa.func.count()).select_from(LiveSocket)).scalar() == 2
    assert len(db.session.execute(sa.select(WritebackOutbox)).all()) == 2


def test_connect_and_leave_within_one_batch_is_recorded_in_order(app, visit):
    app.config["PRESENCE_WRITE_DELAY_SECONDS"] = 10
    staff = staff_socket(app, visit.provider)
    patient = patient_socket(app, visit.patient)
    patient.disconnect()
    again = patient_socket(app, visit.patient)
    again.disconnect()

    writer.flush()
    upkeep_after(app, 6)

    assert kinds_of(visit.patient) == ["connected", "disconnected"]
    assert staff.presence_of(visit.patient) == "disconnected"
    assert db.session.execute(sa.select(sa.func.count()).select_from(LiveSocket).where(
        LiveSocket.participant_id == visit.patient.id)).scalar() == 0


def test_writer_loop_waits_for_a_batch_then_writes_it(app, visit):
    """The body of the background loop: it wakes on queued changes, lets the batch gather
    for the write delay, then writes it."""
    from visits.events import write_visit_changes

    app.config["PRESENCE_WRITE_DELAY_SECONDS"] = 0.05
    patient_socket(app, visit.patient)
    assert db.session.get(Participant, visit.patient.id).presence == "never"

    write_visit_changes()

    db.session.expire_all()
    assert db.session.get(Participant, visit.patient.id).presence == "connected"
    assert not writer.pending()


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
                                     "provider_present", "call_clinic_at", "clinic_phone"}
               for m in received)


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
    assert staff.presence_of(visit.patient) == "disconnected"


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
    snapshot = staff.picture()
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

    wrong_type = staff.emit("call_quality", {"rtt_ms": 42.5, "bitrate_out_kbps": "lots"},
                            callback=True)
    first = staff.emit("call_quality", {"rtt_ms": 42.5, "jitter_ms": 3, "packet_loss_pct": 0.5,
                                        "bitrate_in_kbps": 900, "bitrate_out_kbps": 10**9},
                       callback=True)
    second = staff.emit("call_quality", {"rtt_ms": 40}, callback=True)

    rows = db.session.execute(sa.select(CallQualitySample)).scalars().all()
    assert wrong_type["ok"] is False and wrong_type["code"] == "invalid_payload"
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


def test_a_process_just_started_waits_before_making_disconnects_final(app, visit):
    """After a restart, pages come back at their own pace: the new process must not turn
    them disconnected before its restart grace is over."""
    patient = patient_socket(app, visit.patient)
    patient.disconnect()
    presence.reset_for_tests()
    soon = datetime.now(timezone.utc) + timedelta(seconds=10)
    presence.heartbeat(datetime.now(timezone.utc))

    held_back = presence.finalize_overdue(soon, 5, restart_grace_seconds=15)
    later = presence.finalize_overdue(soon + timedelta(seconds=10), 5, restart_grace_seconds=15)
    writer.flush(soon + timedelta(seconds=10))

    assert held_back == 0 and later == 1
    assert kinds_of(visit.patient) == ["connected", "disconnected"]


def test_a_stopping_process_hands_its_participants_over_at_once(app, visit):
    """A process that stops cleanly removes its sockets and heartbeat: the next one shows
    its patients as reconnecting at once, and a patient who comes back within the grace
    period was never disconnected."""
    from ops.server import stop

    patient_socket(app, visit.patient)
    stop(app)
    presence.reset_for_tests()

    staff = staff_socket(app, visit.provider)
    assert staff.presence_of(visit.patient) == "reconnecting"
    assert db.session.execute(sa.select(sa.func.count()).select_from(ServerProcess)).scalar() == 1
    patient_socket(app, visit.patient)
    upkeep_after(app, 30)

    assert staff.presence_of(visit.patient) == "connected"
    assert kinds_of(visit.patient) == ["connected"]
