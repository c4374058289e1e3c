"""The lobby: patients and guests wait there until a provider of the visit admits them.

Rules live here, not in the socket handlers: only a provider on the same appointment may
admit or end the visit; nobody is admitted into an ended visit; an admitted participant
stays admitted across reconnects; a participant who drops and comes back within the
presence grace period (a reload, a network blip) keeps their place (the same lobby entry,
so the wait time keeps counting). Once their disconnect is final the entry is closed
(visits/writer.py), and coming back later is a new wait, timed from then.
"""
from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from extensions import db
from visits import presence, signals, writer
from visits.errors import NotAllowed, NotFound, VisitEnded
from visits.models import (
    Appointment,
    AppointmentStatus,
    LobbyEntry,
    Participant,
    ParticipantRole,
)

# Who waits in the lobby: everyone who joins by link. Providers arrive through the EHR
# launch and go straight in.
WAITS_IN_LOBBY = (ParticipantRole.PATIENT, ParticipantRole.GUEST, ParticipantRole.INTERPRETER)


def lobby_opens_at(appointment: Appointment) -> datetime:
    """Patients may wait from this time on (the endpoint's lobby window before the start)."""
    return appointment.start_at - timedelta(minutes=appointment.endpoint.lobby_opens_before_minutes)


def is_lobby_open(appointment: Appointment, now: datetime) -> bool:
    """Open from ``lobby_opens_at`` until the visit is ended (links expire on their own)."""
    return appointment.ended_at is None and now >= lobby_opens_at(appointment)


def needs_admission(participant: Participant) -> bool:
    return participant.role in WAITS_IN_LOBBY and participant.admitted_at is None


def enter_lobby(participant: Participant, now: datetime) -> LobbyEntry | None:
    """Open a lobby entry for a participant who must wait, unless one is open already."""
    if not needs_admission(participant) or not is_lobby_open(participant.appointment, now):
        return None
    entry = open_entry(participant)
    if entry is None:
        entry = LobbyEntry(participant=participant, entered_at=now)
        db.session.add(entry)
        db.session.commit()
    return entry


def open_entry(participant: Participant) -> LobbyEntry | None:
    return db.session.execute(
        sa.select(LobbyEntry).where(LobbyEntry.participant_id == participant.id,
                                    LobbyEntry.admitted_at.is_(None),
                                    LobbyEntry.left_at.is_(None))
        .order_by(LobbyEntry.entered_at)).scalars().first()


def admit(appointment_id: int, admitter_id: int, target_id: int, now: datetime) -> Participant:
    """``admitter`` lets ``target`` in; returns the admitted participant."""
    writer.flush()  # the target's lobby place may still be queued
    admitter = provider_of(appointment_id, admitter_id)
    target = db.session.get(Participant, target_id)
    if target is None or target.appointment_id != appointment_id:
        raise NotFound()
    if target.admitted_at is not None:
        return target  # a second click, or two providers at once: already in
    if target.role not in WAITS_IN_LOBBY:
        raise NotAllowed(_l("Only people in the lobby can be admitted."), code="not_waiting")
    _admit(target, admitter, now)
    db.session.commit()
    return target


def admit_all(appointment_id: int, admitter_id: int, now: datetime) -> list[Participant]:
    """Admit everyone waiting and connected; returns who was admitted."""
    writer.flush()
    admitter = provider_of(appointment_id, admitter_id)
    admitted = [p for p in waiting(admitter.appointment) if p.admitted_at is None]
    for participant in admitted:
        _admit(participant, admitter, now)
    db.session.commit()
    return admitted


def end_visit(appointment_id: int, provider_id: int, now: datetime) -> Appointment:
    """End the visit for everyone; later joins are refused."""
    writer.flush()
    provider = provider_of(appointment_id, provider_id)
    appointment = provider.appointment
    appointment.ended_at = now
    appointment.status = AppointmentStatus.FULFILLED
    db.session.execute(
        sa.update(LobbyEntry)
        .where(LobbyEntry.participant_id.in_([p.id for p in appointment.participants]),
               LobbyEntry.admitted_at.is_(None), LobbyEntry.left_at.is_(None))
        .values(left_at=now).execution_options(synchronize_session=False))
    signals.visit_ended.send(appointment, provider=provider, at=now)
    db.session.commit()
    return appointment


def set_lobby_note(appointment_id: int, provider_id: int, text: str,
                   now: datetime) -> Appointment:
    """Show a short note to everyone waiting ("Running 10 minutes late"); empty clears it."""
    appointment = provider_of(appointment_id, provider_id).appointment
    note = " ".join((text or "").split())[:200]
    appointment.lobby_note = note or None
    appointment.lobby_note_at = now if note else None
    db.session.commit()
    return appointment


def waiting_entries(appointment: Appointment) -> list[tuple[Participant, LobbyEntry]]:
    """Connected participants with their open lobby entry, longest wait first (one query;
    the first entry counts if a participant somehow has two)."""
    rows = db.session.execute(
        sa.select(Participant, LobbyEntry)
        .join(LobbyEntry, LobbyEntry.participant_id == Participant.id)
        .where(Participant.appointment_id == appointment.id,
               Participant.presence == "connected",
               LobbyEntry.admitted_at.is_(None), LobbyEntry.left_at.is_(None))
        .order_by(LobbyEntry.entered_at)).all()
    seen: set[int] = set()
    result = []
    for participant, entry in rows:
        if participant.id not in seen:
            seen.add(participant.id)
            result.append((participant, entry))
    return result


def waiting(appointment: Appointment) -> list[Participant]:
    """Participants with an open lobby entry who are connected now, longest wait first."""
    return [participant for participant, _entry in waiting_entries(appointment)]


def provider_of(appointment_id: int, participant_id: int) -> Participant:
    participant = db.session.get(Participant, participant_id)
    if participant is None or participant.appointment_id != appointment_id:
        raise NotAllowed(_l("You are not part of this visit."), code="not_in_visit")
    if participant.role != ParticipantRole.PROVIDER:
        raise NotAllowed(_l("Only a provider of this visit can do that."), code="providers_only")
    if participant.appointment.ended_at is not None:
        raise VisitEnded()
    return participant


def _admit(target: Participant, admitter: Participant, now: datetime) -> None:
    target.admitted_at = now
    presence.left_lobby(target.id)
    entry = open_entry(target)
    if entry is not None:
        entry.admitted_at = now
        entry.admitted_by = admitter
    signals.participant_admitted.send(target.appointment, participant=target, admitter=admitter,
                                      at=now)
