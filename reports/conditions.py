"""SQL conditions the call-quality and texts reports share: "within the chosen days, each
endpoint's days in its own time zone", and the department and provider filters."""
from __future__ import annotations

import sqlalchemy as sa

from reports.framework import Filters
from visits.models import Appointment, Participant, ParticipantRole


def within(filters: Filters, endpoint_column, time_column) -> sa.ColumnElement[bool]:
    """``time_column`` in the chosen days read in the zone of ``endpoint_column``'s
    endpoint, for the endpoints the filters cover: one range per time zone, so an index
    on (endpoint, time) answers each."""
    ranges = []
    for zone, ids in sorted(filters.by_zone().items()):
        start, stop = filters.bounds(zone)
        ranges.append(sa.and_(endpoint_column.in_(sorted(ids)), time_column >= start,
                              time_column < stop))
    return sa.or_(*ranges) if ranges else sa.false()


def appointment_matches(filters: Filters, appointment_id_column) -> list[sa.ColumnElement[bool]]:
    """The department and provider filters, on the appointment ``appointment_id_column``
    names (no condition for a filter not chosen). Each is a set of appointment ids
    (``ix_appointments_endpoint_id_department_display``, ``ix_participants_ehr_user_id``),
    so the database can start from a provider's few visits instead of checking every row."""
    conditions: list[sa.ColumnElement[bool]] = []
    if filters.department:
        conditions.append(appointment_id_column.in_(
            sa.select(Appointment.id).where(
                Appointment.endpoint_id.in_(sorted(filters.zones)),
                Appointment.department_display == filters.department)))
    if filters.provider:
        conditions.append(appointment_id_column.in_(
            sa.select(Participant.appointment_id).where(
                Participant.ehr_user_id == filters.provider,
                Participant.role == ParticipantRole.PROVIDER)))
    return conditions
