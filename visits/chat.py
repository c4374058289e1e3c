"""Chat in a visit: short text messages among the people in it.

Who may write: the visit's providers, and people a provider has let in (those still in
the lobby only read). Who reads: a provider's message reaches everyone in the visit,
the lobby included ("Running 10 minutes late"); anyone else's reaches the providers and
the people let in. Chat is not part of the medical record: the pages say so, and the
provider may download a transcript to paste into the chart.

Retention: messages are kept in memory only, per visit, never in the database or the
logs: this process's memory, or with ``VV_REDIS_URL`` Redis's (one list per visit, so a
page that reconnects to another process reads the same history). While Redis is down, a
process keeps what it is sent itself and its history adds those to Redis's once it is
back. Messages are deleted when the visit is ended (at once by the process that ends it;
on other processes at their next sweep, which checks which of their visits have ended),
and after ``IDLE_HOURS`` without a message in a visit nobody ended (Redis expires the
list). A visit keeps at most ``MAX_KEPT`` messages (the oldest go first).
"""
from __future__ import annotations

import json
import logging
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l
from redis.exceptions import RedisError

from extensions import db
from ops.socket_limits import Budget
from visits import signals
from visits.errors import NotAllowed, VisitEnded
from visits.models import Appointment, Participant, ParticipantRole

log = logging.getLogger(__name__)

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

    @classmethod
    def from_dict(cls, appointment_id: int, kept: dict) -> Message:
        return cls(kept["id"], appointment_id, kept["participant_id"], kept["role"],
                   kept["name"], kept["text"], datetime.fromisoformat(kept["at"]))


@dataclass(frozen=True)
class Audience:
    """Where a message goes: the staff room, and these participants' own rooms."""

    appointment_id: int
    participant_ids: list[int]


_lock = threading.Lock()
# This process's messages (all of them without Redis; those Redis could not take with it),
# and when each visit it knows of last had a message (what its sweep looks at).
_visits: dict[int, deque[Message]] = {}
_last_at: dict[int, datetime] = {}


class SharedChat:
    """Every process's chat in Redis: a list per visit, ``<channel>:chat:<appointment id>``,
    trimmed to ``MAX_KEPT`` and expiring ``IDLE_HOURS`` after its last message. Each call
    raises redis' errors; ``send``, ``history`` and ``forget`` fall back to memory."""

    WARNING_INTERVAL_SECONDS = 60.0

    def __init__(self, url: str, channel: str) -> None:
        import redis

        from extensions import redis_client_options

        self.client = redis.Redis.from_url(url, **redis_client_options())
        self.prefix = f"{channel}:chat:"
        self._warned_at: float | None = None

    def append(self, message: Message) -> None:
        key = f"{self.prefix}{message.appointment_id}"
        kept = message.as_dict()
        del kept["to_lobby"]  # follows from the role
        pipe = self.client.pipeline(transaction=True)
        pipe.rpush(key, json.dumps(kept, separators=(",", ":")))
        pipe.ltrim(key, -MAX_KEPT, -1)
        pipe.expire(key, IDLE_HOURS * 3600)
        pipe.execute()

    def read(self, appointment_id: int) -> list[Message]:
        return [Message.from_dict(appointment_id, json.loads(raw)) for raw in
                self.client.lrange(f"{self.prefix}{appointment_id}", 0, -1)]

    def delete(self, appointment_ids: list[int]) -> None:
        if appointment_ids:
            self.client.delete(*(f"{self.prefix}{aid}" for aid in appointment_ids))

    def failed(self, doing: str, error: Exception) -> None:
        """Log a Redis failure (the class, never a message) at most once a minute."""
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= self.WARNING_INTERVAL_SECONDS:
            self._warned_at = now
            log.warning("chat kept in this process: redis failed", extra={
                "doing": doing, "error": type(error).__name__})


def init_app(app) -> None:
    """Share the chat through Redis when the app has one (no connection is made here)."""
    url = app.config.get("REDIS_URL")
    app.extensions["visits.chat"] = SharedChat(url, app.config["REDIS_CHANNEL"]) if url else None


def _shared() -> SharedChat | None:
    return current_app.extensions.get("visits.chat")


def _keep_here(message: Message) -> None:
    with _lock:
        kept = _visits.setdefault(message.appointment_id, deque(maxlen=MAX_KEPT))
        kept.append(message)


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
    shared = _shared()
    if shared is None:
        _keep_here(message)
    else:
        try:
            shared.append(message)
        except RedisError as error:  # down, timed out, refused
            shared.failed("send", error)
            _keep_here(message)
    with _lock:
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


def messages(appointment_id: int) -> list[Message]:
    """The visit's whole chat, oldest first: one Redis read (with Redis), plus what this
    process kept itself while Redis was down. A page asks on every connect and most visits
    have none, so this is all it costs then."""
    with _lock:
        kept = list(_visits.get(appointment_id, ()))
    shared = _shared()
    if shared is None:
        return kept
    try:
        stored = shared.read(appointment_id)
    except RedisError as error:
        shared.failed("history", error)
        return kept
    if not kept:
        return stored
    ids = {message.id for message in stored}
    return sorted([*stored, *(m for m in kept if m.id not in ids)], key=lambda m: m.at)


def readable_by(participant: Participant, kept: list[Message], *, staff: bool
                ) -> list[Message]:
    """Of ``kept``, what this person may read: all of it for staff and people let in, the
    providers' messages for those still waiting."""
    if staff or participant.admitted_at is not None:
        return kept
    return [message for message in kept if message.to_lobby]


def history(participant: Participant, *, staff: bool) -> list[Message]:
    """What this person may read of the visit's chat, oldest first."""
    return readable_by(participant, messages(participant.appointment_id), staff=staff)


def _drop_here(appointment_ids, *, untrack: bool) -> None:
    """Forget this process's copies; ``untrack``: and stop sweeping for them."""
    with _lock:
        for appointment_id in appointment_ids:
            _visits.pop(appointment_id, None)
            if untrack:
                _last_at.pop(appointment_id, None)


def forget(*appointment_ids: int) -> None:
    """Delete the visits' chat, here and in Redis. If Redis is down the visits stay in
    this process's sweep, which tries again."""
    shared = _shared()
    if shared is not None:
        try:
            shared.delete(list(appointment_ids))
        except RedisError as error:
            shared.failed("delete", error)
            _drop_here(appointment_ids, untrack=False)
            return
    _drop_here(appointment_ids, untrack=True)


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
    if ended:
        forget(*ended)
    stale = set(idle) - set(ended)
    if stale and _shared() is not None:
        # Idle here is not idle everywhere: Redis expires a visit's list 12 hours after its
        # own last message, whichever process took it; only this process's copies go.
        _drop_here(stale, untrack=True)
    elif stale:
        forget(*stale)


def reset_for_tests() -> None:
    with _lock:
        _visits.clear()
        _last_at.clear()
    _budget._buckets.clear()


def _on_visit_ended(appointment: Appointment, **_kwargs) -> None:
    forget(appointment.id)


signals.visit_ended.connect(_on_visit_ended)
