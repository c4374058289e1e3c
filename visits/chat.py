"""Chat in a visit: short text messages among the people in it.

Who may write: the visit's providers, and people a provider has let in (those still in
the lobby only read). Who reads: a provider's message reaches everyone in the visit,
the lobby included ("Running 10 minutes late"); anyone else's reaches the providers and
the people let in. Chat is not part of the medical record: the pages say so, and the
provider may download a transcript to paste into the chart.

Retention: messages are kept in this process's memory only, per visit, never in the
database or the logs. They are deleted when the visit is ended (here at once; on other
processes at their next sweep, which checks which of their visits have ended), and after
``IDLE_HOURS`` without a message in a visit nobody ended. A visit keeps at most
``MAX_KEPT`` messages (the oldest go first).
"""
from __future__ import annotations

import secrets
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from extensions import db
from ops.socket_limits import Budget
from visits import signals
from visits.errors import NotAllowed, VisitEnded
from visits.models import Appointment, Participant, ParticipantRole

MAX_CHARS = 1000
MAX_KEPT = 500
IDLE_HOURS = 12
# Messages per participant: five at once, then one a second.
_budget = Budget(rate=1.0, burst=5)


@dataclass(frozen=True)
class Message:
    id: str
    appointment_id: int
    participant_id: int
    role: str
    name: str | None  # providers', guests' and interpreters' names; never a patient's
    text: str
    at: datetime

    @property
    def to_lobby(self) -> bool:
        """A provider's message reaches people still waiting too."""
        return self.role == ParticipantRole.PROVIDER

    def as_dict(self) -> dict:
        return {"id": self.id, "participant_id": self.participant_id, "role": self.role,
                "name": self.name, "text": self.text, "at": self.at.isoformat(),
                "to_lobby": self.to_lobby}


@dataclass(frozen=True)
class Audience:
    """Where a message goes: the staff room, and these participants' own rooms."""

    appointment_id: int
    participant_ids: list[int]


_lock = threading.Lock()
_visits: dict[int, deque[Message]] = {}
_last_at: dict[int, datetime] = {}


def may_write(participant: Participant, *, staff: bool) -> None:
    """Raises VisitEnded, or NotAllowed for someone still waiting to be let in."""
    if participant.appointment.ended_at is not None:
        raise VisitEnded()
    if not staff and participant.admitted_at is None:
        raise NotAllowed(_l("You can send messages once you're let in."),
                         code="chat_not_admitted")


def send(participant: Participant, text: str, now: datetime, *, staff: bool
         ) -> tuple[Message, Audience]:
    """Keep a message and say who hears it. NotAllowed when empty, too fast, or the
    sender may not write (``may_write``)."""
    may_write(participant, staff=staff)
    body = (text or "").strip()
    if not body:
        raise NotAllowed(_l("Type a message first."), code="chat_empty")
    if len(body) > MAX_CHARS:
        raise NotAllowed(_l("That message is too long."), code="chat_too_long")
    if not _budget.take(participant.id):
        raise NotAllowed(_l("You're sending messages too quickly. Wait a moment."),
                         code="chat_too_fast")
    name = None if participant.role == ParticipantRole.PATIENT else participant.display_name
    message = Message(secrets.token_hex(8), participant.appointment_id, participant.id,
                      participant.role, name, body, now)
    with _lock:
        kept = _visits.setdefault(message.appointment_id, deque(maxlen=MAX_KEPT))
        kept.append(message)
        _last_at[message.appointment_id] = now
    return message, audience(message)


def audience(message: Message) -> Audience:
    """The people (not providers: they hear the staff room) a message reaches: those let
    in, and for a provider's message everyone waiting too (one query)."""
    p = Participant.__table__
    query = sa.select(p.c.id).where(p.c.appointment_id == message.appointment_id,
                                    p.c.role != ParticipantRole.PROVIDER)
    if not message.to_lobby:
        query = query.where(p.c.admitted_at.is_not(None))
    ids = [row[0] for row in db.session.execute(query)]
    return Audience(message.appointment_id, ids)


def history(participant: Participant, *, staff: bool) -> list[Message]:
    """What this person may read of the visit's chat, oldest first."""
    with _lock:
        kept = list(_visits.get(participant.appointment_id, ()))
    if staff or participant.admitted_at is not None:
        return kept
    return [message for message in kept if message.to_lobby]


def has_messages(appointment_id: int) -> bool:
    """Whether this process holds any message of the visit (memory only)."""
    return bool(_visits.get(appointment_id))


def forget(appointment_id: int) -> None:
    with _lock:
        _visits.pop(appointment_id, None)
        _last_at.pop(appointment_id, None)


def sweep(now: datetime) -> None:
    """Delete the chat of visits that were ended (by any process) or idle too long."""
    with _lock:
        held = list(_last_at.items())
    if not held:
        return
    idle = [aid for aid, at in held if now - at > timedelta(hours=IDLE_HOURS)]
    ended = db.session.execute(sa.select(Appointment.id).where(
        Appointment.id.in_([aid for aid, _at in held]),
        Appointment.ended_at.is_not(None))).scalars().all()
    for appointment_id in {*idle, *ended}:
        forget(appointment_id)


def reset_for_tests() -> None:
    with _lock:
        _visits.clear()
        _last_at.clear()
    _budget._buckets.clear()


def _on_visit_ended(appointment: Appointment, **_kwargs) -> None:
    forget(appointment.id)


signals.visit_ended.connect(_on_visit_ended)
