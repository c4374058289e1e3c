"""What a patient's connect costs in database writes: one at a time vs. the batched writer.

Each connect writes a socket row, the participant's presence, a presence event, its
AuditEvent in the outbox and a lobby place. Written the way the first version did (ORM
session, one transaction per connect, a session holding the visit's objects) and the way
``visits/writer.py`` does (Core ``executemany``, one transaction per batch of 20), on a
SQLite file in WAL mode with synchronous=NORMAL, as the app runs it. Prints CPU ms per
connect (process time, so a busy machine skews it little).

    .venv/bin/python bench/presence_writes.py [connects]
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(count: int = 400) -> None:
    workdir = tempfile.mkdtemp(prefix="vv-writes-")
    os.environ.update(VV_DATABASE_URL=f"sqlite:///{workdir}/writes.db",
                      VV_INSTANCE_PATH=f"{workdir}/instance", VV_SECRET_KEY="x" * 40,
                      VV_SANDBOX="0", VV_LOG_LEVEL="WARNING")
    import flask_migrate
    import sqlalchemy as sa

    from app import create_app
    from ehr.models import WritebackOutbox
    from extensions import db
    from tests import factories
    from visits.models import LiveSocket, LobbyEntry, Participant, PresenceEvent

    app = create_app()
    with app.app_context():
        flask_migrate.upgrade()
        endpoint = factories.make_endpoint()
        visits = [factories.make_visit(endpoint, ehr_id=f"w{i}") for i in range(2 * count)]
        patients = [visit.patient.id for visit in visits]
        endpoint_id = endpoint.id
        now = datetime.now(timezone.utc)
        payload = {"resourceType": "AuditEvent", "padding": "x" * 1500}  # a typical size

        started = time.process_time()
        for i, patient in enumerate(patients[:count]):  # the session still holds the visits
            db.session.add(LiveSocket(sid=f"a{i}", participant_id=patient, process_id="p",
                                      connected_at=now))
            db.session.execute(sa.update(Participant).where(
                Participant.id == patient, Participant.presence != "connected")
                .values(presence="connected", presence_since=now))
            db.session.add(PresenceEvent(participant_id=patient, kind="connected", at=now))
            db.session.add(WritebackOutbox(endpoint_id=endpoint_id, resource_type="AuditEvent",
                                           business_identifier=f"a/{i}", payload=payload,
                                           status="pending", attempts=0, next_attempt_at=now))
            db.session.add(LobbyEntry(participant_id=patient, entered_at=now))
            db.session.commit()
        one_by_one = (time.process_time() - started) * 1000 / count
        db.session.remove()

        tables = [model.__table__ for model in (LiveSocket, Participant, PresenceEvent,
                                                WritebackOutbox, LobbyEntry)]
        sockets, people, events, outbox, lobby = tables
        started = time.process_time()
        batch = patients[count:]
        for start in range(0, count, 20):
            chunk = list(enumerate(batch[start:start + 20], start))
            db.session.execute(sa.insert(sockets), [
                {"sid": f"b{i}", "participant_id": p, "process_id": "p", "connected_at": now}
                for i, p in chunk])
            db.session.execute(sa.update(people).where(
                people.c.id.in_([p for _, p in chunk]), people.c.presence != "connected")
                .values(presence="connected", presence_since=now))
            db.session.execute(sa.insert(events), [
                {"participant_id": p, "kind": "connected", "at": now} for _, p in chunk])
            db.session.execute(sa.insert(outbox), [
                {"endpoint_id": endpoint_id, "resource_type": "AuditEvent",
                 "business_identifier": f"b/{i}", "payload": payload, "status": "pending",
                 "attempts": 0, "next_attempt_at": now, "created_at": now} for i, _ in chunk])
            db.session.execute(sa.insert(lobby), [
                {"participant_id": p, "entered_at": now} for _, p in chunk])
            db.session.commit()
        batched = (time.process_time() - started) * 1000 / count
    print(f"CPU per connect's writes: one at a time {one_by_one:.2f} ms, "
          f"batched by 20 {batched:.3f} ms ({one_by_one / batched:.0f}x less)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 400)
