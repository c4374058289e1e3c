"""A participant's optional one-tap rating (1 to 5) of their visit, given once it ended.

A score, the rater's role and when: no free text, no name. The quality report reads it
(``VisitRating``); rows outlive a purged appointment (SET NULL), as device-test results do,
so aggregate figures stay.
"""
from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Mapped, mapped_column

from extensions import db
from visits.errors import VisitError
from visits.models import Participant, ParticipantRole, UTCDateTime, one_of, utcnow

LOWEST, HIGHEST = 1, 5
# Who is asked: the people who came in through the waiting room, not the staff.
RATERS = (ParticipantRole.PATIENT, ParticipantRole.GUEST, ParticipantRole.INTERPRETER)


class VisitRating(db.Model):
    """One participant's rating of one visit; rating again replaces the score."""

    __tablename__ = "visit_ratings"
    __table_args__ = (
        one_of("role", ParticipantRole),
        sa.CheckConstraint(f"score BETWEEN {LOWEST} AND {HIGHEST}", name="score"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    appointment_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("appointments.id", ondelete="SET NULL"), index=True)
    # Unique: one rating per participant (and so per visit).
    participant_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("participants.id", ondelete="SET NULL"), unique=True)
    role: Mapped[str] = mapped_column(sa.String(16))
    score: Mapped[int] = mapped_column(sa.SmallInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)

    def __repr__(self) -> str:
        return f"<VisitRating {self.id} appointment={self.appointment_id} score={self.score}>"


class RatingNotOpen(VisitError):
    """Only a visit that has ended can be rated, and only by those it asks."""

    code = "rating_not_open"
    message = _l("This visit can't be rated.")


def rate(participant_id: int, score: int, now: datetime) -> VisitRating:
    """Keep ``participant_id``'s score for their ended visit (a second tap replaces it)."""
    participant = db.session.get(Participant, participant_id)
    if (participant is None or participant.role not in RATERS
            or participant.appointment.ended_at is None):
        raise RatingNotOpen()
    if not LOWEST <= score <= HIGHEST:
        raise ValueError(f"score must be {LOWEST} to {HIGHEST}")
    rating = db.session.execute(sa.select(VisitRating).where(
        VisitRating.participant_id == participant.id)).scalar_one_or_none()
    if rating is None:
        rating = VisitRating(appointment_id=participant.appointment_id,
                             participant_id=participant.id, role=participant.role)
        db.session.add(rating)
    rating.score = score
    rating.created_at = now
    db.session.commit()
    return rating
