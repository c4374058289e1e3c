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
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError

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
from ops.background import periodic
from reports import framework
from reports.conditions import appointment_matches, within
from reports.framework import Chart, Column, Filters, Report, Table
from reports.health import DateRange, zone_of
from reports.labels import labelled
from reports.models import SmsReportDay, SmsReportState
from visits.models import (
    Appointment,
    AppointmentStatus,
    Participant,
    ParticipantRole,
    utcnow,
)

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
FOLLOW_UP_REASONS = {"no mobile number": _l("no mobile number"), "landline": _l("landline"),
                     "no patient": _l("no patient")}


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


REASONED = (SmsStatus.FAILED, SmsStatus.SUPPRESSED)
# A day's texts are final this many days after it ends (delivery reports come within
# minutes or hours); from then on they are counted once, into sms_report_days.
SETTLE_DAYS = 2
Key = tuple[str, str, str | None, str | None]  # kind, outcome, error code, reason


def _live(ids: list[int], start: datetime, stop: datetime,
          filters: Filters | None = None) -> list[tuple[int, Key, int]]:
    """(endpoint id, key, texts) of the texts due in [start, stop) at these endpoints."""
    m = SmsMessage
    outcome = _outcome_column()
    code = sa.case((m.status.in_(REASONED), m.error_code), else_=None)
    reason = sa.case((m.status.in_(REASONED), sa.func.substr(m.error_message, 1, 200)),
                     else_=None)
    query = (sa.select(Appointment.endpoint_id, m.kind, outcome, code, reason, sa.func.count())
             .where(m.appointment_id == Appointment.id, Appointment.endpoint_id.in_(ids),
                    m.scheduled_for >= start, m.scheduled_for < stop, m.kind.in_(KINDS))
             .group_by(Appointment.endpoint_id, m.kind, outcome, code, reason))
    if filters is not None:
        query = query.where(*appointment_matches(filters, Appointment.id))
    return [(endpoint_id, (kind, result, error_code, why), count)
            for endpoint_id, kind, result, error_code, why, count in db.session.execute(query)]


def _counts(filters: Filters) -> dict[Key, int]:
    """Texts per (kind, outcome, code, reason) over the chosen days: settled days from
    sms_report_days (unless a department or provider is chosen), the rest counted live."""
    counts: dict[Key, int] = defaultdict(int)
    settled = None if filters.department or filters.provider else db.session.execute(
        sa.select(SmsReportState.settled_through)).scalar()
    for zone, ids in sorted(filters.by_zone().items()):
        live_from = filters.days.start
        if settled is not None and filters.days.start <= settled:
            d = SmsReportDay
            for kind, result, code, reason, texts in db.session.execute(
                    sa.select(d.kind, d.outcome, d.error_code, d.reason, sa.func.sum(d.texts))
                    .where(d.endpoint_id.in_(sorted(ids)), d.day >= filters.days.start,
                           d.day <= min(filters.days.end, settled))
                    .group_by(d.kind, d.outcome, d.error_code, d.reason)):
                counts[(kind, result, code, reason)] += texts
            live_from = settled + timedelta(days=1)
        if live_from <= filters.days.end:
            start, stop = DateRange(live_from, filters.days.end).bounds(ZoneInfo(zone))
            for _endpoint, key, texts in _live(sorted(ids), start, stop, filters):
                counts[key] += texts
    return counts


def settle(now: datetime) -> int:
    """Count the texts of every day not yet counted whose texts are final into
    sms_report_days, each endpoint's day in its own zone; returns how many days. One
    transaction, conditional on the state it started from, so two processes settling at
    once count each day once. Commits."""
    through = (now - timedelta(days=SETTLE_DAYS + 1)).date()
    state = db.session.execute(sa.select(SmsReportState)).scalar_one_or_none()
    if state is not None and state.settled_through >= through:
        db.session.rollback()
        return 0
    if state is None:
        first = db.session.execute(sa.select(sa.func.min(SmsMessage.scheduled_for))).scalar()
        day = (first.date() - timedelta(days=1)) if first else through
    else:
        day = state.settled_through + timedelta(days=1)
    zones: dict[str, list[int]] = defaultdict(list)
    for endpoint_id, zone in db.session.execute(sa.select(EhrEndpoint.id,
                                                          EhrEndpoint.site_timezone)):
        zones[zone_of(zone).key].append(endpoint_id)
    days = 0
    while day <= through:
        rows = []
        for zone, ids in zones.items():
            start, stop = DateRange(day, day).bounds(ZoneInfo(zone))
            for endpoint_id, (kind, result, code, reason), texts in _live(ids, start, stop):
                rows.append({"endpoint_id": endpoint_id, "day": day, "kind": kind,
                             "outcome": result, "error_code": code, "reason": reason,
                             "texts": texts})
        if rows:
            db.session.execute(SmsReportDay.__table__.insert(), rows)
        day += timedelta(days=1)
        days += 1
    if state is None:
        try:
            with db.session.begin_nested():
                db.session.add(SmsReportState(id=1, settled_through=through))
        except IntegrityError:  # another process counted first
            db.session.rollback()
            return 0
    else:
        moved = db.session.execute(
            sa.update(SmsReportState).where(SmsReportState.id == state.id,
                                            SmsReportState.settled_through
                                            == state.settled_through)
            .values(settled_through=through)).rowcount
        if not moved:
            db.session.rollback()
            return 0
    db.session.commit()
    return days


@periodic(600.0, name="reports.sms_settle")
def _settle_periodically() -> None:
    settle(utcnow())


def build(filters: Filters, now: datetime) -> Report:
    """The report for ``filters``; the follow-up list looks ahead from ``now``."""
    counts = _counts(filters)
    by_kind: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (kind, result, _code, _reason), texts in counts.items():
        by_kind[kind][result] += texts
    kinds = Table("kinds", _l("Texts by kind"),
                  _l("Texts due in the chosen days, by kind and what became of them"),
                  [Column("kind", _l("Kind"), "text"), Column("total", _l("Texts")),
                   *(Column(key, OUTCOME_LABELS[key]) for key in OUTCOMES),
                   Column("delivered_share", _l("Delivered (of those sent)"), "percent")])
    totals: dict[str, int] = defaultdict(int)
    for kind in KINDS:
        row: dict[str, Any] = {"kind": labelled(str(kind), KIND_LABELS),
                               "total": sum(by_kind[kind].values())}
        for key in OUTCOMES:
            row[key] = by_kind[kind][key]
            totals[key] += by_kind[kind][key]
        handed = sum(row[key] for key in ("delivered", "sent", "failed", "undelivered"))
        row["delivered_share"] = row["delivered"] / handed if handed else None
        kinds.rows.append(row)
    outcomes = Table("outcomes", _l("All texts by outcome"),
                     _l("Every text due in the chosen days, by what became of it"),
                     [Column("outcome", _l("Outcome"), "text"), Column("texts", _l("Texts"))],
                     [{"outcome": labelled(key, OUTCOME_LABELS), "texts": totals[key]}
                      for key in OUTCOMES])
    reasons = _reasons(counts)
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


def _reasons(counts: dict[Key, int]) -> Table:
    table = Table("reasons", _l("Why texts failed or were not sent"),
                  _l("Failed, undelivered and unsent texts by kind and reason"),
                  [Column("kind", _l("Kind"), "text"), Column("outcome", _l("Outcome"), "text"),
                   Column("error_code", _l("Error code"), "text"),
                   Column("reason", _l("Reason"), "text"), Column("texts", _l("Texts"))])
    found = [(texts, key) for key, texts in counts.items()
             if key[1] in ("failed", "undelivered", "not_sent")]
    for texts, (kind, result, code, reason) in sorted(
            found, key=lambda item: (-item[0], item[1][0], item[1][2] or "", item[1][3] or "")):
        table.rows.append({"kind": labelled(kind, KIND_LABELS),
                           "outcome": labelled(result, OUTCOME_LABELS), "error_code": code,
                           "reason": reason, "texts": texts})
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
                           "reason": labelled(reason, FOLLOW_UP_REASONS)})
    return table


framework.register(framework.ReportKind(
    "sms", _l("Texts"),
    _l("Texts sent, delivered and failed by kind, with reasons; opt-outs; visits nobody can "
       "text"),
    build, filters=("endpoint", "department", "provider", "period")))
