"""Sign-ins begun in this browser and not yet back, kept in the signed session by their
OAuth ``state``: each answer is matched once (a replay finds nothing), and attempts the
person abandoned do not pile up in the cookie.

Used by the provider and patient SMART launches, the admin's approval sign-in and the
staff / admin single sign-on; each keeps its own ``key`` and serializes its own record.
"""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


def hold(store: MutableMapping[str, Any], key: str, state: str, record: dict[str, Any], *,
         limit: int) -> None:
    """Keep ``record`` under ``state``, dropping the oldest beyond ``limit``."""
    held = dict(store.get(key) or {})
    held[state] = record
    while len(held) > limit:
        held.pop(next(iter(held)))
    store[key] = held  # reassigned, so a Flask session knows it changed


def take(store: MutableMapping[str, Any], key: str, state: str | None) -> dict[str, Any] | None:
    """The record begun with ``state``, removed so it is used once; None if unknown."""
    held = dict(store.get(key) or {})
    record = held.pop(state, None) if state else None
    store[key] = held
    return record if isinstance(record, dict) else None
