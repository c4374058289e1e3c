"""Forget the names of guests and interpreters once their visit is over.

A provider types a guest's or an interpreter's name when inviting them; the provider's
page shows it while they are in the visit. It is the only name we store of anyone who is
not a provider (the patient row is kept nameless by a CHECK), so it is kept only while
it can be shown: it is cleared when the visit is ended, cancelled or a no-show, or once
none of that person's join links can open the visit any more (every one expired or
revoked: at the earliest the visit's end plus the endpoint's link grace period). The
participant row stays, without a name, for presence, the audit trail and reports.
"""
from __future__ import annotations

import logging
from datetime import datetime

import sqlalchemy as sa

from extensions import db
from ops.background import periodic
from visits.models import (
    Appointment,
    AppointmentStatus,
    JoinLink,
    Participant,
    ParticipantRole,
    PresenceState,
    utcnow,
)

log = logging.getLogger(__name__)

NAMED_GUESTS = (ParticipantRole.GUEST, ParticipantRole.INTERPRETER)
_OVER = (AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW)


def forget_guest_names(now: datetime) -> int:
    """Clear the names of guests and interpreters whose visit is over; returns how many.
    Commits."""
    visit_over = sa.exists().where(
        Appointment.id == Participant.appointment_id,
        sa.or_(Appointment.ended_at.is_not(None), Appointment.status.in_(_OVER)))
    link_usable = sa.exists().where(
        JoinLink.participant_id == Participant.id, JoinLink.revoked_at.is_(None),
        JoinLink.expires_at > now)
    cleared = db.session.execute(
        sa.update(Participant)
        .where(Participant.role.in_(NAMED_GUESTS), Participant.display_name.is_not(None),
               # Links run out at a set time, but a visit can run long: someone still
               # connected keeps their name on the provider's page until they leave.
               sa.or_(visit_over, sa.and_(~link_usable,
                                          Participant.presence != PresenceState.CONNECTED)))
        .values(display_name=None).execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    if cleared:
        log.info("names of guests and interpreters of finished visits deleted",
                 extra={"participants": cleared})
    return cleared


@periodic(60.0, name="visits.retention")
def forget_finished_names() -> None:
    """Background loop body: once a minute in each process (one UPDATE, usually of no row)."""
    forget_guest_names(utcnow())
