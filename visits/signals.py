"""What happened in a visit, announced for whoever integrates with it (blinker signals).

The domain records a change and sends one of these inside the same database transaction;
subscribers (the EHR write-back in ``ehr/audit_trail.py``) add their own rows to that
transaction with ``db.session``, so the change and every promise made about it commit
or roll back together. ``visits/`` never imports ``ehr/`` or ``notifications/``.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from blinker import Namespace

_signals = Namespace()


@dataclass(frozen=True)
class PresenceFact:
    """A participant's presence changed, as recorded (``presence_events`` row ``event_id``)."""

    event_id: int
    participant_id: int
    appointment_id: int
    role: str
    kind: str  # "connected" | "disconnected"
    at: datetime


# kwargs: facts=list[PresenceFact]. Sent once per batch the presence writer records.
presence_recorded = _signals.signal("presence-recorded")
# sender: the Appointment; kwargs: participant (admitted), admitter (the provider), at.
participant_admitted = _signals.signal("participant-admitted")
# sender: the Appointment; kwargs: provider (who ended it), at.
visit_ended = _signals.signal("visit-ended")
