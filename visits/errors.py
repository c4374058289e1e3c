"""Domain errors of the visit area; the edges (views, socket handlers) translate them.

Each error has a stable ``code`` (pages and scripts branch on it) and a message that is
a lazy translation: ``str(error)`` renders it in the locale active where it is read, so
the socket edge reads it once, in the person's own language (visits/replies.py).
"""
from __future__ import annotations

from flask_babel import lazy_gettext as _l


class VisitError(Exception):
    """Base class: ``str(error)`` is a short message safe to show the person who acted."""

    code = "not_allowed"
    message = _l("You can't do that in this visit.")

    def __init__(self, message=None, *, code: str | None = None) -> None:
        super().__init__(message if message is not None else self.message)
        if code is not None:
            self.code = code


class LinkUnknown(VisitError):
    """No join link has this token (mistyped, or never issued)."""

    code = "link_unknown"
    message = _l("This link isn't valid.")


class LinkExpired(VisitError):
    """The link existed but its validity has ended, or it was revoked."""

    code = "link_expired"
    message = _l("This visit has ended.")


class NotAllowed(VisitError):
    """The participant may not do this (e.g. a patient trying to admit)."""


class NotFound(VisitError):
    """The participant or visit named does not exist in this visit."""

    code = "not_found"
    message = _l("That person is not in this visit.")


class VisitEnded(VisitError):
    """The visit was ended; nothing more can happen in it."""

    code = "visit_ended"
    message = _l("This visit has ended.")
