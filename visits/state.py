"""What each side of a visit is told: the staff's full picture, a patient's own state.

Staff snapshots carry participant ids, roles, presence and the lobby; provider display
names only (the patient's name is read live from FHIR by the visit page and never
leaves the EHR's own token). A patient's state carries nothing about anyone else
except whether a provider is there.

Both are read with a few Core queries (no ORM objects), because they are built on every
connect: one query for a patient's own state, three for a staff snapshot.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from extensions import db
from visits import media, presence
from visits.models import Appointment, JoinLink, LobbyEntry, Participant

_p = Participant.__table__
_links = JoinLink.__table__
_a = Appointment.__table__
_lobby = LobbyEntry.__table__
# Who waits in the lobby: everyone who joins by link. Providers come in through the EHR.
WAITS_IN_LOBBY = ("patient", "guest", "interpreter")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _open_entry(participant_id):
    """The first open lobby entry's start (a participant who somehow has two keeps the
    first), as a correlated scalar subquery."""
    return (sa.select(sa.func.min(_lobby.c.entered_at))
            .where(_lobby.c.participant_id == participant_id,
                   _lobby.c.admitted_at.is_(None), _lobby.c.left_at.is_(None))
            .scalar_subquery())


@dataclass(frozen=True)
class Context:
    """Everything a participant's own state needs, from one query."""

    participant_id: int
    appointment_id: int
    role: str
    admitted: bool
    ended: bool
    lobby_opens_at: datetime
    lobby_note: str | None
    waiting_since: datetime | None
    provider_present: bool
    start_at: datetime
    clinic_phone: str | None

    @property
    def needs_admission(self) -> bool:
        return self.role in WAITS_IN_LOBBY and not self.admitted

    def lobby_open(self, now: datetime) -> bool:
        return not self.ended and now >= self.lobby_opens_at

    @property
    def state(self) -> str:
        if self.ended:
            return "ended"
        return "waiting" if self.needs_admission else "admitted"


@functools.cache
def _context_query() -> sa.Select:
    """Built once: constructing a statement costs more than running it on SQLite."""
    # The endpoint's row holds the lobby window; read by name, visits/ does not import ehr/.
    endpoints = db.metadata.tables["ehr_endpoints"]
    providers = sa.alias(_p)
    return (
        sa.select(_p.c.id, _p.c.appointment_id, _p.c.role, _p.c.admitted_at, _a.c.ended_at,
                  _a.c.start_at, endpoints.c.lobby_opens_before_minutes, _a.c.lobby_note,
                  endpoints.c.clinic_phone,
                  _open_entry(_p.c.id).label("waiting_since"),
                  sa.exists().where(providers.c.appointment_id == _a.c.id,
                                    providers.c.role == "provider",
                                    providers.c.presence == "connected").label("provider"))
        .join(_a, _a.c.id == _p.c.appointment_id)
        .join(endpoints, endpoints.c.id == _a.c.endpoint_id))


@functools.cache
def _one_context() -> sa.Select:
    return _context_query().where(_p.c.id == sa.bindparam("pid"))


@functools.cache
def _visit_contexts() -> sa.Select:
    return _context_query().where(_p.c.appointment_id == sa.bindparam("aid"),
                                  _p.c.role != "provider")


def _context(row) -> Context:
    admitted = row.admitted_at is not None or row.role not in WAITS_IN_LOBBY
    return Context(
        participant_id=row.id, appointment_id=row.appointment_id, role=row.role,
        admitted=admitted, ended=row.ended_at is not None,
        lobby_opens_at=row.start_at - timedelta(minutes=row.lobby_opens_before_minutes),
        lobby_note=row.lobby_note,
        # A lobby place this process queued but has not written yet counts too.
        waiting_since=row.waiting_since if admitted
        else (row.waiting_since or presence.waiting_since(row.id)),
        provider_present=bool(row.provider) or presence.staff_here(row.appointment_id),
        start_at=row.start_at, clinic_phone=row.clinic_phone)


def context(participant_id: int) -> Context | None:
    row = db.session.execute(_one_context(), {"pid": participant_id}).one_or_none()
    return _context(row) if row is not None else None


@dataclass(frozen=True)
class HeldLink:
    """The join link a patient's pass names, as ``context_with_link`` found it."""

    participant_id: int | None  # whose it is (None: there is no such link)
    revoked_at: datetime | None
    expires_at: datetime | None


@functools.cache
def _context_and_link() -> sa.Select:
    return (_context_query()
            .add_columns(_links.c.participant_id.label("link_participant_id"),
                         _links.c.revoked_at.label("link_revoked_at"),
                         _links.c.expires_at.label("link_expires_at"))
            .outerjoin(_links, _links.c.id == sa.bindparam("lid"))
            .where(_p.c.id == sa.bindparam("pid")))


def context_with_link(participant_id: int, link_id: int) -> tuple[Context, HeldLink] | None:
    """A participant's context and the join link their pass names, in one query: what a
    patient's socket needs to be let in, instead of two round trips."""
    row = db.session.execute(_context_and_link(), {"pid": participant_id, "lid": link_id}
                             ).one_or_none()
    if row is None:
        return None
    return _context(row), HeldLink(row.link_participant_id, row.link_revoked_at,
                                   row.link_expires_at)


def visit_contexts(appointment_id: int) -> list[Context]:
    """The context of everyone in the visit who is not a provider (one query)."""
    return [_context(row) for row in
            db.session.execute(_visit_contexts(), {"aid": appointment_id})]


def lobby_state(ctx: Context, now: datetime, waiting_since: datetime | None = None) -> dict:
    """A patient's or guest's own state: waiting, admitted or ended. ``call_clinic_at``:
    from then on the waiting room tells a patient still waiting to call the clinic
    (``clinic_phone``, when the endpoint has one): the page times it by the server clock."""
    late = timedelta(minutes=current_app.config["LOBBY_CALL_CLINIC_AFTER_MINUTES"])
    return {
        "state": ctx.state,
        "server_time": now.isoformat(),
        "waiting_since": _iso(waiting_since or ctx.waiting_since),
        "note": ctx.lobby_note,
        "provider_present": ctx.provider_present,
        "call_clinic_at": _iso(ctx.start_at + late),
        "clinic_phone": ctx.clinic_phone,
    }


def participant_view(participant: Participant | int, now: datetime) -> dict:
    """``lobby_state`` for one participant, read fresh."""
    participant_id = participant if isinstance(participant, int) else participant.id
    return lobby_state(context(participant_id), now)


@functools.cache
def _staff_query() -> sa.Select:
    """The whole visit in one query: a row per participant, with the visit's own columns,
    the open lobby place and the latest device test (device_test/'s table, read by name
    so visits/ does not import it)."""
    tests = db.metadata.tables["device_test_results"]

    # One correlated lookup of the latest test's id per participant, then a join by key:
    # a subquery per column read the same index twice for every row.
    newer = tests.alias("newer_test")
    latest_id = (sa.select(newer.c.id).where(newer.c.participant_id == _p.c.id)
                 .order_by(newer.c.created_at.desc(), newer.c.id.desc()).limit(1)
                 .correlate(_p).scalar_subquery())

    return (sa.select(_p.c.id, _p.c.role, _p.c.display_name, _p.c.presence,
                      _p.c.presence_since, _p.c.sockets_gone_at, _p.c.admitted_at,
                      _open_entry(_p.c.id).label("waiting_since"),
                      tests.c.overall.label("test_overall"),
                      tests.c.created_at.label("test_at"),
                      _a.c.ended_at, _a.c.lobby_note)
            .join(_a, _a.c.id == _p.c.appointment_id)
            .outerjoin(tests, tests.c.id == latest_id)
            .where(_a.c.id == sa.bindparam("aid")).order_by(_p.c.id))


def staff_view(appointment: Appointment | int, now: datetime) -> dict:
    """The whole visit, for providers: participants, presence, the lobby, device tests.

    The rows may lag this process's queued writes by a batch; what this process knows in
    memory (sockets, lobby places) is laid over them, so the picture is current without
    forcing a write."""
    appointment_id = appointment if isinstance(appointment, int) else appointment.id
    rows = db.session.execute(_staff_query(), {"aid": appointment_id}).all()
    participants, lobby = [], []
    for row in rows:
        shown, since = _presence(row)
        admitted = row.admitted_at is not None or row.role not in WAITS_IN_LOBBY
        participants.append({
            "id": row.id, "role": row.role, "display_name": row.display_name,
            "presence": shown, "presence_since": _iso(since), "admitted": admitted,
            # What their page last said of its camera and microphone, while connected.
            "media": _media(row.id, shown),
            # The latest device-test grade, so staff can call ahead.
            "device_test": {"overall": row.test_overall, "at": _iso(row.test_at)}
            if row.test_overall else None,
        })
        waiting_since = row.waiting_since or presence.waiting_since(row.id)
        if waiting_since is not None and not admitted and shown in ("connected", "reconnecting"):
            lobby.append({"participant_id": row.id, "role": row.role,
                          "entered_at": _iso(waiting_since)})
    lobby.sort(key=lambda entry: entry["entered_at"])
    first = rows[0] if rows else None
    return {
        "appointment_id": appointment_id,
        "ended": first is not None and first.ended_at is not None,
        "server_time": now.isoformat(),
        "lobby_note": first.lobby_note if first is not None else None,
        "participants": participants,
        "lobby": lobby,
    }


def _media(participant_id: int, shown: str) -> dict | None:
    known = media.state_of(participant_id)
    if known is None or shown not in ("connected", "reconnecting"):
        return None
    return known.as_dict()


def _presence(row) -> tuple[str, datetime | None]:
    """The recorded presence, laid over with this process's memory: connected while a
    socket is open here, "reconnecting" while a connected participant has no socket and
    the grace period runs (here, or according to the database)."""
    here = presence.presence_here(row.id)
    if here == "connected":
        return "connected", (row.presence_since if row.presence == "connected"
                             else presence.since_here(row.id))
    if here == "reconnecting" or (row.presence == "connected" and row.sockets_gone_at):
        return "reconnecting", presence.gone_at(row.id) or row.sockets_gone_at
    return row.presence, row.presence_since
