"""HL7 v2 SIU intake: verify, deduplicate, apply to the appointment, acknowledge.

Interface engines resend whatever they are unsure of and may deliver out of order, so
every message is recorded by (endpoint, sender, MSH-10) before it is applied: a resend
gets the same MSA-1 again and changes nothing, and an update older (by MSH-7) than the
last one applied to an appointment is acknowledged but not applied.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

import at_rest
from ehr.models import EhrEndpoint
from extensions import db
from hl7feed import hl7
from hl7feed.certificates import verify_signature
from hl7feed.models import AckCode, Hl7AckCount, Hl7MessageReceipt
from notifications import scheduling
from notifications.models import PHONE_PURPOSE, SmsRecipient
from notifications.scheduling import Change
from ops.sql import upsert
from visits import appointments
from visits.models import (
    Appointment,
    AppointmentStatus,
    Participant,
    ParticipantRole,
    utcnow,
)

log = logging.getLogger(__name__)

_STATUS = {"S15": AppointmentStatus.CANCELLED, "S17": AppointmentStatus.CANCELLED,
           "S26": AppointmentStatus.NOSHOW}


class SignatureInvalid(Exception):
    """No valid certificate of the endpoint signed this body (HTTP 401)."""


class UnknownEndpoint(Exception):
    """No approved endpoint has this name (HTTP 404)."""


@dataclass(frozen=True)
class IntakeResult:
    """The ACK to return and what happened, for the log (ids and codes only)."""

    ack: str
    code: str
    control_id: str
    message_type: str
    applied: bool


def receive(endpoint_name: str, body: bytes, signature: str | None, *,
            trusted_transport: bool = False) -> IntakeResult:
    """Handle one signed HL7 body for the endpoint called ``endpoint_name``.

    ``trusted_transport``: the MLLP listener's connection (loopback or TLS) stands in for
    the signature, which MLLP has no place for. Raises UnknownEndpoint, SignatureInvalid,
    or hl7.UnreadableMessage (no MSH); any other outcome is an ACK (AA, AE or AR)."""
    endpoint = db.session.execute(
        db.select(EhrEndpoint).filter_by(name=endpoint_name)).scalar_one_or_none()
    if endpoint is None or not endpoint.is_approved:
        raise UnknownEndpoint(endpoint_name)
    if not trusted_transport and not verify_signature(endpoint, body, signature):
        raise SignatureInvalid()
    text = hl7.decode_body(body)
    header = hl7.read_header(text)
    message_type = f"{header.message_type}^{header.trigger}"[:32]

    def result(code: str, applied: bool = False, **error) -> IntakeResult:
        return IntakeResult(hl7.ack(header, code, **error), code, header.control_id,
                            message_type, applied)

    try:
        parsed = hl7.parse_siu(text, site_timezone=endpoint.site_timezone,
                               phone_region=endpoint.default_phone_region or "US")
    except hl7.UnsupportedMessage as exc:
        code = "203" if "version" in str(exc) else "200"
        return result(AckCode.REJECT, error=str(exc), error_code=code, segment="MSH")
    except hl7.UnusableMessage as exc:
        if not header.control_id:
            return result(AckCode.ERROR, error=str(exc), error_code=exc.code,
                          segment=exc.segment)
        parsed = None
        unusable = exc
    try:
        return _record_and_apply(endpoint, header, message_type, parsed,
                                 None if parsed else unusable, result)
    except SQLAlchemyError:
        db.session.rollback()
        log.exception("hl7 message not applied (storage)",
                      extra={"control_id": header.control_id, "message_type": message_type})
        return result(AckCode.REJECT, error="temporary failure, please resend")


def _record_and_apply(endpoint: EhrEndpoint, header: hl7.Header, message_type: str,
                      parsed: hl7.ParsedSiu | None, unusable: hl7.UnusableMessage | None,
                      result) -> IntakeResult:
    receipt = Hl7MessageReceipt(endpoint_id=endpoint.id, sender=header.sender,
                                control_id=header.control_id[:199], message_type=message_type)
    try:
        with db.session.begin_nested():
            db.session.add(receipt)
    except IntegrityError:
        previous = db.session.execute(db.select(Hl7MessageReceipt).filter_by(
            endpoint_id=endpoint.id, sender=header.sender,
            control_id=header.control_id[:199])).scalar_one()
        previous_code = previous.ack_code
        db.session.rollback()
        if previous_code is None:  # another process is applying it right now
            return result(AckCode.REJECT, error="message is being processed, resend later")
        if previous_code == AckCode.ERROR:
            return result(AckCode.ERROR, error="message was refused before (duplicate)")
        return result(previous_code)
    if unusable is not None:
        acknowledge(receipt, AckCode.ERROR)
        db.session.commit()
        return result(AckCode.ERROR, error=str(unusable), error_code=unusable.code,
                      segment=unusable.segment)
    try:
        with db.session.begin_nested():
            applied = _apply(endpoint, parsed)
    except hl7.UnusableMessage as exc:
        acknowledge(receipt, AckCode.ERROR)
        db.session.commit()
        return result(AckCode.ERROR, error=str(exc), error_code=exc.code, segment=exc.segment)
    acknowledge(receipt, AckCode.ACCEPT)
    db.session.commit()
    return result(AckCode.ACCEPT, applied=applied)


def acknowledge(receipt: Hl7MessageReceipt, code: AckCode) -> None:
    """The receipt's MSA-1, and its endpoint's count of that code, in the caller's
    transaction (an upsert: two processes may count the same endpoint at once)."""
    receipt.ack_code = code
    last = Hl7AckCount.__table__.c.last_received_at
    received = sa.literal(receipt.received_at, last.type)
    upsert(Hl7AckCount, {"endpoint_id": receipt.endpoint_id, "ack_code": code.value},
           {"messages": 1, "last_received_at": receipt.received_at},
           {"messages": Hl7AckCount.__table__.c.messages + 1,
            # Two processes may commit out of order: the later time stays.
            "last_received_at": sa.case((last < received, received), else_=last)})


def _apply(endpoint: EhrEndpoint, parsed: hl7.ParsedSiu) -> bool:
    """Create or update the appointment; False when there was nothing to apply (an older
    update, or a cancel of an appointment never heard of and without a time)."""
    appointment = appointments.find_for_hl7(endpoint.id, parsed.filler_id, parsed.placer_id)
    sent_at: datetime | None = parsed.header.message_time
    if appointment is not None and appointment.last_message_at and sent_at \
            and sent_at < appointment.last_message_at:
        return False
    before = (appointment.start_at, appointment.status) if appointment is not None else None
    if appointment is None:
        if parsed.start is None:
            if parsed.trigger in _STATUS:
                return False
            raise hl7.UnusableMessage("no appointment start time (TQ1-7, SCH-11.4, AIS-4, "
                                      "AIL-6, AIP-6 or AIG-8)", "SCH")
        appointment = Appointment(endpoint_id=endpoint.id, placer_id=parsed.placer_id,
                                  filler_id=parsed.filler_id, start_at=parsed.start,
                                  end_at=parsed.end, timezone=endpoint.site_timezone,
                                  status=AppointmentStatus.BOOKED)
        db.session.add(appointment)
    appointment.placer_id = parsed.placer_id or appointment.placer_id
    appointment.filler_id = parsed.filler_id or appointment.filler_id
    if parsed.start is not None and parsed.trigger not in _STATUS:
        appointment.start_at, appointment.end_at = parsed.start, parsed.end
    if parsed.department:
        appointment.department_display = parsed.department
    if parsed.trigger in _STATUS:
        appointment.status = _STATUS[parsed.trigger]
    elif parsed.trigger in ("S12", "S13"):
        appointment.status = AppointmentStatus.BOOKED
    if sent_at:
        appointment.last_message_at = sent_at
    db.session.flush()
    if parsed.patient_id:
        reference = f"Patient?identifier={parsed.patient_id}"[:255]
        patient = appointments.patient_for_hl7(appointment, reference) or _participant(
            appointment, reference, ParticipantRole.PATIENT, None)
        patient.language = parsed.language or patient.language
        _store_phone(patient, parsed)
    for provider in parsed.providers:
        # A provider who launched this visit is the same row, found by their Practitioner's
        # identifiers; they keep the name their FHIR record gave them.
        known = appointments.provider_for_hl7(appointment, provider.identifier)
        if known is None or not (known.ehr_user_id or "").startswith("Practitioner/"):
            _participant(appointment, f"Practitioner?identifier={provider.identifier}",
                         ParticipantRole.PROVIDER, provider.display_name)
    db.session.flush()
    change = _change(before, appointment)
    if change is not None:
        scheduling.appointment_changed(appointment, change, utcnow())
    return True


def _change(before: tuple[datetime, str] | None, appointment: Appointment) -> Change | None:
    """What this message did, for the texts: ``before`` is (start, status) or None if new."""
    over = (AppointmentStatus.CANCELLED, AppointmentStatus.NOSHOW)
    if appointment.status in over:
        if before is None or before[1] == appointment.status:
            return None  # never announced, or already told
        return Change.CANCELLED if appointment.status == AppointmentStatus.CANCELLED \
            else Change.NOSHOW
    if before is None or before[1] in over:
        return Change.CREATED
    return Change.RESCHEDULED if before[0] != appointment.start_at else Change.UPDATED


def _participant(appointment: Appointment, ehr_user_id: str, role: str,
                 display_name: str | None) -> Participant:
    """Identified by an identifier search string (``Patient?identifier=auth|id``) until a
    launch tells us the FHIR id; a patient is never named."""
    ehr_user_id = ehr_user_id[:255]
    existing = next((p for p in appointment.participants if p.ehr_user_id == ehr_user_id), None)
    if existing is not None:
        if display_name and existing.role == ParticipantRole.PROVIDER:
            existing.display_name = display_name[:200]
        return existing
    participant = Participant(ehr_user_id=ehr_user_id, role=role,
                              display_name=display_name[:200] if display_name and
                              role == ParticipantRole.PROVIDER else None)
    appointment.participants.append(participant)
    db.session.flush()
    return participant


def _store_phone(patient: Participant, parsed: hl7.ParsedSiu) -> None:
    """Keep the newest usable number (encrypted); a message without one keeps the old."""
    if not parsed.phone:
        return
    recipient = db.session.execute(
        db.select(SmsRecipient).filter_by(participant_id=patient.id)).scalar_one_or_none()
    if recipient is None:
        recipient = SmsRecipient(participant_id=patient.id)
        db.session.add(recipient)
    recipient.phone_encrypted = at_rest.encrypt(parsed.phone, PHONE_PURPOSE)
    recipient.phone_line_type = parsed.phone_line_type
    recipient.language = parsed.language


def has_sms_phone(appointment: Appointment) -> bool:
    """False flags the appointment "no SMS phone": kept, but nobody can be texted."""
    ids = [p.id for p in appointment.participants if p.role == ParticipantRole.PATIENT]
    if not ids:
        return False
    return db.session.execute(db.select(SmsRecipient.id).where(
        SmsRecipient.participant_id.in_(ids)).limit(1)).first() is not None
