"""An endpoint's SMS set-up, kept in ``EhrEndpoint.sms_settings`` (JSON) and read here
with defaults, so the scheduler, the admin form and the CLI agree on one shape.

Never credentials: those stay in the environment (``VV_TWILIO_*``).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import time
from typing import Any

import phonenumbers

DEFAULT_REMINDER_OFFSETS = (1440, 15)  # minutes before the start: a day, a quarter hour
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


class InvalidSmsSettings(ValueError):
    """A value an admin typed cannot be used; the message says which and why."""


@dataclass(frozen=True)
class SmsSettings:
    enabled: bool = True
    send_confirmation: bool = True
    send_reschedule: bool = True
    send_cancellation: bool = True
    # Minutes before the start; an empty tuple sends no reminders.
    reminder_offsets_minutes: tuple[int, ...] = DEFAULT_REMINDER_OFFSETS
    # Reminders due between these clinic-local times wait for the end of quiet hours
    # (or are skipped if the visit starts first). Equal times: no quiet hours.
    quiet_start: str = "21:00"
    quiet_end: str = "08:00"
    # E.164 number texts come from; None: the installation's VV_TWILIO_FROM_NUMBER.
    sender_number: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def quiet_hours(self) -> tuple[time, time] | None:
        if self.quiet_start == self.quiet_end:
            return None
        return _clock(self.quiet_start), _clock(self.quiet_end)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        data["reminder_offsets_minutes"] = list(self.reminder_offsets_minutes)
        return data


def _clock(text: str) -> time:
    match = _CLOCK.match(text or "")
    if not match:
        raise InvalidSmsSettings(f"{text!r} is not a time of day like 21:00")
    return time(int(match.group(1)), int(match.group(2)))


def parse(data: dict[str, Any] | None) -> SmsSettings:
    """Settings from the stored JSON (or a form converted to it), checked; missing keys
    take their defaults. Raises InvalidSmsSettings."""
    data = dict(data or {})
    known = {f for f in SmsSettings.__dataclass_fields__ if f != "extra"}
    values: dict[str, Any] = {}
    for key in ("enabled", "send_confirmation", "send_reschedule", "send_cancellation"):
        if key in data:
            values[key] = bool(data[key])
    if "reminder_offsets_minutes" in data:
        raw = data["reminder_offsets_minutes"]
        if isinstance(raw, str):
            raw = [part for part in re.split(r"[,\s]+", raw.strip()) if part]
        try:
            offsets = sorted({int(v) for v in raw}, reverse=True)
        except (TypeError, ValueError):
            raise InvalidSmsSettings("reminder offsets must be whole minutes, e.g. 1440, 15") \
                from None
        if any(v <= 0 or v > 60 * 24 * 14 for v in offsets):
            raise InvalidSmsSettings("each reminder offset must be between 1 minute and 14 days")
        values["reminder_offsets_minutes"] = tuple(offsets)
    for key in ("quiet_start", "quiet_end"):
        if key in data and data[key] is not None:
            _clock(str(data[key]))
            values[key] = str(data[key])
    if data.get("sender_number"):
        number = str(data["sender_number"]).strip()
        try:
            parsed = phonenumbers.parse(number, None)
        except phonenumbers.NumberParseException:
            raise InvalidSmsSettings("the sender number must be in international form, "
                                     "e.g. +16085550100") from None
        if not phonenumbers.is_possible_number(parsed):
            raise InvalidSmsSettings("the sender number is not a possible phone number")
        values["sender_number"] = phonenumbers.format_number(
            parsed, phonenumbers.PhoneNumberFormat.E164)
    extra = {k: v for k, v in data.items() if k not in known}
    return SmsSettings(**values, extra=extra)


def for_endpoint(endpoint) -> SmsSettings:
    """The endpoint's settings; stored values that no longer parse fall back to defaults
    (an admin is told when they save, the scheduler must never crash on them)."""
    try:
        return parse(endpoint.sms_settings)
    except InvalidSmsSettings:
        return SmsSettings()
