"""Socket replies in the person's own language.

A refusal carries a stable ``code`` (pages and scripts branch on it) and an ``error``
translated here, once, at the edge: in the language the socket's page was shown in,
chosen when it connected (``ops.i18n.select_locale``: the session's ``?lang=`` choice,
else the browser's Accept-Language) and kept for its life. Domain errors bring their own
code and lazy message (visits/errors.py); the few refusals the socket edge decides itself
are named here.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import request
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l

from ops import payloads
from ops.i18n import select_locale
from visits import realtime
from visits.errors import VisitError

EDGE_REFUSALS = {
    "not_in_visit": _l("You are not part of this visit."),
    "staff_only": _l("Only the visit's staff can do that."),
    "not_in_call": _l("You are not in the call."),
    "not_in_this_call": _l("That person is not in this call."),
    "server_error": _l("Something went wrong. Please try again."),
    # A payload the page would never send (ops/payloads.py): an old cached page, or a
    # hand-made request. The ack's "detail" names the field, in English.
    "invalid_payload": _l("This page sent something we couldn't read. Reload the page and "
                          "try again."),
}


@contextmanager
def speaking_to(sid: str | None) -> Iterator[None]:
    """Translations inside the block are in the language of socket ``sid``."""
    locale = realtime.locale_for(sid) if sid else None
    with force_locale(locale or select_locale()):
        yield


def refusal(code: str, sid: str | None) -> dict:
    """``{"ok": false, "code": ..., "error": ...}`` for a refusal named in EDGE_REFUSALS."""
    with speaking_to(sid):
        return {"ok": False, "code": code, "error": str(EDGE_REFUSALS[code])}


def refusal_for(error: VisitError, sid: str | None) -> dict:
    """The reply for a domain error, its message in the socket's language."""
    with speaking_to(sid):
        return {"ok": False, "code": error.code, "error": str(error)}


def _word_payload_refusal() -> str:
    return refusal("invalid_payload", getattr(request, "sid", None))["error"]


payloads.word_refusals_with(_word_payload_refusal)
