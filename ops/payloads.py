"""What each Socket.IO event may carry: one schema per event, checked before its handler.

A payload comes from anyone who can open a socket, so types are enforced exactly: an id
is an ``int`` from 1 to 2**63-1 (``true`` is not 1, ``1.0`` is not 1, 10**30 names no
row), text is a ``str`` of bounded length, numbers are finite. A refused payload gets the
ack ``{"ok": false, "code": "invalid_payload", "error": ..., "detail": "<field> must be
..."}`` and never reaches the handler; the log names the event and the field, never the
value. ``error`` is for the person (pages show it): worded by the layer that knows the
socket's language (``word_refusals_with``); ``detail`` is for whoever debugs the client.

Schemas are built once, at import, from plain functions: checking a payload makes no
objects beyond the cleaned dict the handler receives (unknown keys are left out of it).

    @socketio.on("admit")
    @expects(participant_id=ID)
    def admit(data): ...
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import request

log = logging.getLogger(__name__)

# Ids are PostgreSQL bigints: anything beyond cannot name a row, and drivers raise on it.
MAX_ID = 2**63 - 1

Check = Callable[[Any], Any]


# The ack's "error" for the person, in the socket's language: set by visits/replies.py
# (this module sits below it and cannot ask); until then the detail, in English.
_word_refusal: Callable[[], str] | None = None


def word_refusals_with(word: Callable[[], str]) -> None:
    """Let the layer that knows each socket's language word refused payloads' ``error``."""
    global _word_refusal
    _word_refusal = word


class Refused(ValueError):
    """A value that does not fit; the message completes "<field> ..."."""


class _Optional:
    """A field that may be absent or null (``maybe(check)``)."""

    __slots__ = ("check",)

    def __init__(self, check: Check) -> None:
        self.check = check


def maybe(check: Check) -> _Optional:
    """The field may be missing or ``null``; when given, it must pass ``check``."""
    return _Optional(check)


def _identifier(value: Any) -> int:
    # type() rather than isinstance(): bool is a subclass of int.
    if type(value) is not int or not 1 <= value <= MAX_ID:
        raise Refused(f"must be a whole number from 1 to {MAX_ID}")
    return value


ID: Check = _identifier


def is_id(value: Any) -> bool:
    """For code outside a schema (a connect's ``auth``): the same rule as ``ID``."""
    return type(value) is int and 1 <= value <= MAX_ID


def text(max_length: int) -> Check:
    """A string of at most ``max_length`` characters (empty allowed)."""
    message = f"must be text of at most {max_length} characters"

    def check(value: Any) -> str:
        if type(value) is not str or len(value) > max_length:
            raise Refused(message)
        return value

    return check


def whole(low: int, high: int) -> Check:
    """An ``int`` (not a bool) from ``low`` to ``high``."""
    message = f"must be a whole number from {low} to {high}"

    def check(value: Any) -> int:
        if type(value) is not int or not low <= value <= high:
            raise Refused(message)
        return value

    return check


def _number(value: Any) -> float | int:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise Refused("must be a finite number")
    return value


NUMBER: Check = _number


def _boolean(value: Any) -> bool:
    if type(value) is not bool:
        raise Refused("must be true or false")
    return value


BOOLEAN: Check = _boolean


def one_of(*allowed: str) -> Check:
    choices = frozenset(allowed)
    message = "must be one of " + ", ".join(allowed)

    def check(value: Any) -> str:
        if type(value) is not str or value not in choices:
            raise Refused(message)
        return value

    return check


def obj(**fields: Check | _Optional) -> Check:
    """A JSON object with these fields (unknown keys are dropped)."""
    return _compile(fields)


def _compile(fields: dict[str, Check | _Optional]) -> Check:
    required = tuple((name, check) for name, check in fields.items()
                     if not isinstance(check, _Optional))
    optional = tuple((name, check.check) for name, check in fields.items()
                     if isinstance(check, _Optional))

    def check(value: Any) -> dict:
        if type(value) is not dict:
            raise Refused("must be an object")
        clean = {}
        for name, field in required:
            if name not in value:
                raise Refused(f"{name}: is required")
            try:
                clean[name] = field(value[name])
            except Refused as refused:
                raise Refused(f"{name}: {refused}") from None
        for name, field in optional:
            given = value.get(name)
            if given is None:
                if name in value:
                    clean[name] = None
                continue
            try:
                clean[name] = field(given)
            except Refused as refused:
                raise Refused(f"{name}: {refused}") from None
        return clean

    check.fields = fields  # type: ignore[attr-defined]  (for docs and tests)
    return check


def check_payload(schema: Check, args: tuple) -> dict:
    """The cleaned payload of an event's arguments, or Refused. An event carries one
    object, or nothing at all when every field is optional."""
    if len(args) > 1:
        raise Refused("payload: send one object")
    data = args[0] if args else None
    if data is None:
        data = {}
    try:
        return schema(data)
    except Refused as refused:
        raise Refused(f"payload: {refused}" if str(refused).startswith("must") else
                      str(refused)) from None


def expects(**fields: Check | _Optional):
    """Decorate a Socket.IO handler: its payload must match ``fields``; the handler gets
    the cleaned dict. Put it under ``@socketio.on(...)``."""
    schema = _compile(fields)

    def decorator(handler):
        @wraps(handler)
        def checked(*args):
            try:
                data = check_payload(schema, args)
            except Refused as refused:
                event = getattr(request, "event", None)
                log.info("socket payload refused", extra={
                    "event": event.get("message") if isinstance(event, dict) else None,
                    "problem": str(refused)})
                detail = str(refused)
                return {"ok": False, "code": "invalid_payload",
                        "error": _word_refusal() if _word_refusal else detail, "detail": detail}
            return handler(data)

        checked.payload_schema = schema  # type: ignore[attr-defined]
        return checked

    return decorator
