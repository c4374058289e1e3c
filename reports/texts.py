"""The texts report: what happened to the texts due in the chosen days, by kind
(confirmation, reminder, cancellation, ...) with the failure reasons; opt-outs and opt-ins
over time; and the upcoming appointments nobody can text ("needs follow-up").

Counts, error codes and our own words for a failure (``SmsMessage.error_message``, which
never holds a number or a text); the follow-up list names appointments by their EHR ids
only. Texts are counted by the time they were due (``scheduled_for``, indexed), in their
endpoint's time zone. An admin's self-test texts belong to no visit and are not counted.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from ehr.models import EhrEndpoint
from extensions import db
from notifications.models import (
    OptChange,
    SmsKind,
    SmsMessage,
    SmsOptEvent,
    SmsRecipient,
    SmsStatus,
)
from notifications.scheduling import LANDLINE
from reports import framework
from reports.conditions import appointment_matches, within
from reports.framework import Chart, Column, Filters, Report, Table
from visits.models import Appointment, AppointmentStatus, Participant, ParticipantRole

# How far ahead the follow-up list looks, and how many appointments it shows at most.
FOLLOW_UP_DAYS = 14
FOLLOW_UP_LIMIT = 500
KINDS = (SmsKind.CONFIRMATION, SmsKind.REMINDER, SmsKind.CANCELLATION, SmsKind.RESCHEDULE,
         SmsKind.INVITATION)
KIND_LABELS = {SmsKind.CONFIRMATION: _l("Confirmation"), SmsKind.REMINDER: _l("Reminder"),
               SmsKind.CANCELLATION: _l("Cancellation"), SmsKind.RESCHEDULE: _l("Reschedule"),
               SmsKind.INVITATION: _l("Invitation (guest link)")}
# Outcomes, in the order of the page: a text's status, with Twilio's "undelivered" (the
# carrier could not hand it to the phone) told apart from other failures.
OUTCOMES = ("delivered", "sent", "failed", "undelivered", "not_sent", "cancelled", "scheduled")
OUTCOME_LABELS = {"delivered": _l("Delivered"), "sent": _l("Sent, not yet confirmed"),
                  "failed": _l("Failed"), "undelivered": _l("Undelivered"),
                  "not_sent": _l("Not sent (opted out, landline, quiet hours...)"),
                  "cancelled": _l("Cancelled"), "scheduled": _l("Scheduled")}
_UNDELIVERED = "Twilio reported undelivered%"


def _outcome_column():
    m = SmsMessage
    return sa.case(
        (m.status == SmsStatus.DELIVERED, "delivered"),
        (m.status.in_((SmsStatus.SENT, SmsStatus.SENDING)), "sent"),
        (sa.and_(m.status == SmsStatus.FAILED, m.error_message.like(_UNDELIVERED)),
         "undelivered"),
        (m.status == SmsStatus.FAILED, "failed"),
        (m.status == SmsStatus.SUPPRESSED, "not_sent"),
        (m.status == SmsStatus.CANCELLED, "cancelled"),
        else_="scheduled")


def _texts(filters: Filters) -> list[sa.ColumnElement[bool]]:
    return [SmsMessage.appointment_id == Appointment.id,
            within(filters, Appointment.endpoint_id, SmsMessage.scheduled_for),
            SmsMessage.kind.in_(KINDS), *appointment_matches(filters, Appointment.id)]


def build(filters: Filters, now: datetime) -> Report:
    """The report for ``filters``; the follow-up list looks ahead from ``now``."""
    outcome = _outcome_column().label("outcome")
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for kind, result, count in db.session.execute(
            sa.select(SmsMessage.kind, outcome, sa.func.count())
            .where(*_texts(filters)).group_by(SmsMessage.kind, outcome)):
        counts[kind][result] += count
    kinds = Table("kinds", _l("Texts by kind"),
                  _l("Texts due in the chosen days, by kind and what became of them"),
                  [Column("kind", _l("Kind"), "text"), Column("total", _l("Texts")),
                   *(Column(key, OUTCOME_LABELS[key]) for key in OUTCOMES),
                   Column("delivered_share", _l("Delivered (of those sent)"), "percent")])
    totals: dict[str, int] = defaultdict(int)
    for kind in KINDS:
        row: dict[str, Any] = {"kind": str(kind), "total": sum(counts[kind].values())}
        for key in OUTCOMES:
            row[key] = counts[kind][key]
            totals[key] += counts[kind][key]
        handed = sum(row[key] for key in ("delivered", "sent", "failed", "undelivered"))
        row["delivered_share"] = row["delivered"] / handed if handed else None
        kinds.rows.append(row)
    outcomes = Table("outcomes", _l("All texts by outcome"),
                     _l("Every text due in the chosen days, by what became of it"),
                     [Column("outcome", _l("Outcome"), "text"), Column("texts", _l("Texts"))],
                     [{"outcome": key, "texts": totals[key]} for key in OUTCOMES])
    reasons = _reasons(filters)
    opt = _opt_changes(filters)
    follow_up = _follow_up(filters, now)
    return Report("sms", filters, now, [kinds, outcomes, reasons, opt, follow_up], [
        Chart("outcomes-chart", _l("Texts by outcome"),
              _l("How many texts were delivered, failed or not sent"), outcomes, "outcome",
              "texts"),
        Chart("opt-outs-chart", _l("Opt-outs"), _l("Numbers that replied STOP, per period"),
              opt, "period", "opt_outs"),
    ], notes=[_l("Texts count in the day they were due, in their endpoint's time zone. "
                 "The follow-up list looks %(days)d days ahead from now.", days=FOLLOW_UP_DAYS)])


def _reasons(filters: Filters) -> Table:
    outcome = _outcome_column().label("outcome")
    table = Table("reasons", _l("Why texts failed or were not sent"),
                  _l("Failed, undelivered and unsent texts by kind and reason"),
                  [Column("kind", _l("Kind"), "text"), Column("outcome", _l("Outcome"), "text"),
                   Column("error_code", _l("Error code"), "text"),
                   Column("reason", _l("Reason"), "text"), Column("texts", _l("Texts"))])
    m = SmsMessage
    count = sa.func.count().label("texts")
    for kind, result, code, reason, texts in db.session.execute(
            sa.select(m.kind, outcome, m.error_code, m.error_message, count)
            .where(*_texts(filters), m.status.in_((SmsStatus.FAILED, SmsStatus.SUPPRESSED)))
            .group_by(m.kind, outcome, m.error_code, m.error_message)
            .order_by(count.desc(), m.kind, m.error_code, m.error_message)):
        table.rows.append({"kind": kind, "outcome": result, "error_code": code,
                           "reason": (reason or "")[:200] or None, "texts": texts})
    return table


def _opt_changes(filters: Filters) -> Table:
    """STOP and START per period. A STOP to a number no endpoint sends from has no endpoint:
    it counts only when every endpoint is chosen, read in the first endpoint's zone."""
    e = SmsOptEvent
    periods = filters.periods()
    rows = {period: {"period": period, "opt_outs": 0, "opt_ins": 0} for period in periods}
    zones = dict(filters.zones)
    condition = within(filters, e.endpoint_id, e.at)
    fallback = next(iter(sorted(set(zones.values()))), "UTC")
    if not filters.endpoint:
        start, stop = filters.bounds(fallback)
        condition = sa.or_(condition, sa.and_(e.endpoint_id.is_(None), e.at >= start,
                                              e.at < stop))
    for change, endpoint_id, at in db.session.execute(
            sa.select(e.change, e.endpoint_id, e.at).where(condition)):
        period = filters.period_of(at, zones.get(endpoint_id, fallback))
        if period in rows:
            rows[period]["opt_outs" if change == OptChange.OPT_OUT else "opt_ins"] += 1
    return Table("opt", _l("Opt-outs and opt-ins"),
                 _l("Numbers that replied STOP (opt-outs) and START (opt-ins), per period"),
                 [Column("period", _l("Period"), "date"), Column("opt_outs", _l("Opt-outs")),
                  Column("opt_ins", _l("Opt-ins"))], [rows[period] for period in periods])


def _follow_up(filters: Filters, now: datetime) -> Table:
    """Upcoming appointments (the next FOLLOW_UP_DAYS days) whose patient has no number we
    can text: none given, or only a landline (the HL7 feed keeps no landline, so such a
    patient has no number at all)."""
    table = Table("follow_up", _l("Needs follow-up: upcoming visits nobody can text"),
                  _l("Upcoming appointments whose patient has no mobile number; call them "
                     "or fix the number in the EHR"),
                  [Column("visit", _l("Visit"), "int"),
                   Column("start", _l("Scheduled start"), "datetime"),
                   Column("endpoint", _l("Endpoint"), "text"),
                   Column("department", _l("Department"), "text"),
                   Column("ehr_appointment_id", _l("EHR appointment"), "text"),
                   Column("placer_id", _l("Placer id"), "text"),
                   Column("filler_id", _l("Filler id"), "text"),
                   Column("patient", _l("Patient (EHR id)"), "text"),
                   Column("reason", _l("Why"), "text")],
                  empty=_l("Every upcoming visit has a number to text."))
    a = Appointment
    patient = sa.and_(Participant.appointment_id == a.id,
                      Participant.role == ParticipantRole.PATIENT)
    textable = sa.exists().where(
        patient, SmsRecipient.participant_id == Participant.id,
        sa.or_(SmsRecipient.phone_line_type.is_(None), SmsRecipient.phone_line_type != LANDLINE))
    found = db.session.execute(
        sa.select(a.id, a.start_at, a.department_display, a.ehr_appointment_id, a.placer_id,
                  a.filler_id, EhrEndpoint.name)
        .join(EhrEndpoint, EhrEndpoint.id == a.endpoint_id)
        .where(a.start_at >= now, a.start_at < now + timedelta(days=FOLLOW_UP_DAYS),
               a.status.in_((AppointmentStatus.BOOKED, AppointmentStatus.ARRIVED)),
               a.ended_at.is_(None), a.endpoint_id.in_(sorted(filters.zones)),
               ~textable, *appointment_matches(filters, a.id))
        .order_by(a.start_at, a.id).limit(FOLLOW_UP_LIMIT)).all()
    ids = [row.id for row in found]
    patients: dict[int, list[str]] = defaultdict(list)
    landline: set[int] = set()
    for appointment_id, ehr_user_id, line_type in db.session.execute(
            sa.select(Participant.appointment_id, Participant.ehr_user_id,
                      SmsRecipient.phone_line_type)
            .outerjoin(SmsRecipient, SmsRecipient.participant_id == Participant.id)
            .where(Participant.appointment_id.in_(ids),
                   Participant.role == ParticipantRole.PATIENT)
            .order_by(Participant.id)):
        patients[appointment_id].append(ehr_user_id or "")
        if line_type == LANDLINE:
            landline.add(appointment_id)
    for row in found:
        reason = ("landline" if row.id in landline else
                  "no mobile number" if patients[row.id] else "no patient")
        table.rows.append({"visit": row.id, "start": row.start_at, "endpoint": row.name,
                           "department": row.department_display,
                           "ehr_appointment_id": row.ehr_appointment_id,
                           "placer_id": row.placer_id, "filler_id": row.filler_id,
                           "patient": ", ".join(p for p in patients[row.id] if p) or None,
                           "reason": reason})
    return table


framework.register(framework.ReportKind(
    "sms", _l("Texts"),
    _l("Texts sent, delivered and failed by kind, with reasons; opt-outs; visits nobody can "
       "text"),
    build, filters=("endpoint", "department", "provider", "period")))
