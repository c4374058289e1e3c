"""The words of each text, in the patient's language (English, Spanish, Brazilian
Portuguese), with the visit's time in the clinic's time zone.

A text says only what a lock screen may show: the clinic or department, when, the join
link and how to opt out. Never the patient's name or anything clinical. Strings go
through flask_babel so the same translation files cover the pages and the texts.
"""
from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from babel.dates import format_skeleton, format_time
from flask_babel import force_locale
from flask_babel import gettext as _

from notifications.models import SmsKind
from ops.i18n import normalise
from visits.models import Appointment

# A department name longer than this is cut, so a text stays within two SMS segments.
_MAX_CLINIC = 60
_SPACES = re.compile(r"[\u00a0\u2007\u202f]")


def locale_for(language: str | None) -> str:
    """PID-15 style codes ("es", "spa", "pt-BR", "por", "pt") to es / pt_BR; else en."""
    code = (language or "").strip().lower()
    code = {"spa": "es", "por": "pt", "eng": "en"}.get(code, code)
    return normalise(code) or "en"


def when(start: datetime, zone_name: str, locale: str) -> str:
    """The visit's start as the clinic's wall clock says it: "Mon, Mar 11 at 9:30 AM CDT"."""
    zone = ZoneInfo(zone_name)
    local = start.astimezone(zone)
    return _("%(date)s at %(time)s %(zone)s",
             date=format_skeleton("MMMEd", start, tzinfo=zone, locale=locale),
             time=format_time(start, "short", tzinfo=zone, locale=locale),
             zone=local.tzname() or "")


def _clinic(appointment: Appointment | None) -> str:
    name = " ".join((appointment.department_display or "").split()) if appointment else ""
    if len(name) > _MAX_CLINIC:
        name = name[:_MAX_CLINIC - 3].rstrip() + "..."
    return name or _("Your care team")


def _in_language(url: str | None, locale: str) -> str | None:
    """The link opens the pages in the text's language (``?lang=``, remembered for the
    visit by ops/i18n.py); the page's language switch still offers the others."""
    if not url:
        return url
    return f"{url}{'&' if '?' in url else '?'}lang={locale.replace('_', '-')}"


def render(kind: str, language: str | None, appointment: Appointment | None,
           join_url: str | None, *, clinic: str | None = None) -> str:
    """The body of one text of ``kind`` (an SmsKind) in ``language``.

    ``appointment`` may be None only for a test text; ``join_url`` is ignored for a
    cancellation and a test text, which carry no link; ``clinic`` names the sender when
    there is no appointment (a test text: the endpoint's name)."""
    locale = locale_for(language)
    join_url = _in_language(join_url, locale)
    with force_locale(locale):
        clinic = clinic or _clinic(appointment)
        at = when(appointment.start_at, appointment.timezone, locale) if appointment else ""
        if kind == SmsKind.CONFIRMATION:
            text = _("%(clinic)s: your video visit is booked for %(when)s. Join here: %(url)s",
                     clinic=clinic, when=at, url=join_url)
        elif kind == SmsKind.RESCHEDULE:
            text = _("%(clinic)s: your video visit has moved to %(when)s. Join here: %(url)s",
                     clinic=clinic, when=at, url=join_url)
        elif kind == SmsKind.CANCELLATION:
            text = _("%(clinic)s: your video visit on %(when)s is cancelled. Call the clinic "
                     "to rebook.", clinic=clinic, when=at)
        elif kind == SmsKind.REMINDER:
            text = _("%(clinic)s: reminder, your video visit is %(when)s. Join here: %(url)s",
                     clinic=clinic, when=at, url=join_url)
        elif kind == SmsKind.INVITATION:
            text = _("%(clinic)s: you are invited to join a video visit on %(when)s. "
                     "Join here: %(url)s", clinic=clinic, when=at, url=join_url)
        elif kind == SmsKind.TEST:
            text = _("Virtual Visits test message: texting works for %(clinic)s.",
                     clinic=clinic)
        else:
            raise ValueError(f"unknown text kind {kind!r}")
        text = text + " " + _("Reply STOP to opt out.")
    # CLDR puts narrow no-break spaces in times ("9:30\u202fAM"); any character outside
    # the GSM alphabet makes the whole text UCS-2, which halves the room per SMS segment.
    return _SPACES.sub(" ", text)
