"""Domain errors of the visit area; the edges (views, socket handlers) translate them."""
from __future__ import annotations


class VisitError(Exception):
    """Base class: ``str(error)`` is a short message safe to show the person who acted."""


class LinkUnknown(VisitError):
    """No join link has this token (mistyped, or never issued)."""


class LinkExpired(VisitError):
    """The link existed but its validity has ended, or it was revoked."""


class NotAllowed(VisitError):
    """The participant may not do this (e.g. a patient trying to admit)."""


class NotFound(VisitError):
    """The participant or visit named does not exist in this visit."""


class VisitEnded(VisitError):
    """The visit was ended; nothing more can happen in it."""
