"""Device-test results: validate, store, and queue the EHR write-back.

Takes explicit arguments (no request or session) so the view, a CLI and tests share it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any


from device_test import context as ctx
from device_test import observation
from device_test.models import DeviceTestResult
from device_test.schema import CHECKS, first_error
from ehr import outbox
from ehr.models import WritebackResource
from extensions import db
from visits.models import Appointment, Participant, ParticipantRole

_RANK = {"pass": 0, "warn": 1, "fail": 2}


class ResultRejected(Exception):
    """The posted result does not match the schema; the message says where."""


@dataclass(frozen=True)
class Recorded:
    result: DeviceTestResult
    written_back: bool
    context_error: str | None  # "expired" / "invalid" when a ctx was given but not honoured


# Checks a visit cannot do without: one that did not run (a browser without WebRTC skips
# the test call) leaves nothing to say the visit will work, so it counts as a fail.
REQUIRED = ("test_call",)


def overall_of(checks: dict[str, dict[str, Any]]) -> str:
    """The worst grade among checks that ran; nothing ran at all, or a required check that
    did not run, is a fail, never a pass."""
    ran = [checks[name]["status"] for name in CHECKS if checks[name]["status"] in _RANK]
    if not ran or any(checks[name]["status"] not in _RANK for name in REQUIRED):
        return "fail"
    return max(ran, key=_RANK.__getitem__)


def summarize_user_agent(user_agent: str | None) -> str | None:
    """"Chrome 131 / Android": enough to spot a browser-specific failure, no more."""
    text = user_agent or ""
    browser = None
    for name, pattern in (("Edge", r"Edg/(\d+)"), ("Samsung Internet", r"SamsungBrowser/(\d+)"),
                          ("Firefox", r"Firefox/(\d+)"), ("Chrome", r"(?:Chrome|CriOS)/(\d+)"),
                          ("Safari", r"Version/(\d+).*Safari")):
        match = re.search(pattern, text)
        if match:
            browser = f"{name} {match.group(1)}"
            break
    systems = (("Android", "Android"), ("iOS", "iPhone|iPad"), ("Windows", "Windows"),
               ("macOS", "Macintosh"), ("ChromeOS", "CrOS"), ("Linux", "Linux"))
    system = next((name for name, pattern in systems if re.search(pattern, text)), None)
    parts = [part for part in (browser, system) if part]
    return " / ".join(parts)[:120] or None


def record(document: Any, *, secret_key: str, context_ttl_seconds: int,
           user_agent: str | None, now: datetime) -> Recorded:
    """Store one result; with a valid context for a patient, queue the Observation too.

    A bad or expired context does not lose the result: it is stored anonymously and the
    caller is told why it was not filed to the chart.
    """
    problem = first_error(document)
    if problem:
        raise ResultRejected(problem)
    checks = document["checks"]
    context = None
    context_error = None
    if document.get("context"):
        try:
            context = ctx.read_token(secret_key, document["context"], context_ttl_seconds)
        except ctx.ContextExpired:
            context_error = "expired"
        except ctx.ContextInvalid:
            context_error = "invalid"
    overall = overall_of(checks)
    result = DeviceTestResult(
        appointment_id=context.appointment_id if context else None,
        participant_id=context.participant_id if context else None,
        created_at=now, overall=overall, checks=checks,
        user_agent_summary=summarize_user_agent(user_agent))
    db.session.add(result)
    db.session.flush()
    written_back = False
    if context is not None:
        participant = db.session.get(Participant, context.participant_id)
        if participant.role == ParticipantRole.PATIENT:
            _queue_observation(participant.appointment, participant, result, now)
            written_back = True
    db.session.commit()
    return Recorded(result, written_back, context_error)


def _queue_observation(appointment: Appointment, participant: Participant,
                       result: DeviceTestResult, now: datetime) -> None:
    identifier = f"device-test-{appointment.endpoint_id}-{result.id}"
    patient = participant.ehr_user_id if (participant.ehr_user_id or "").startswith(
        "Patient/") else None
    payload = observation.build(
        identifier=identifier, overall=result.overall, checks=result.checks, effective=now,
        patient_reference=patient,
        appointment_reference=(f"Appointment/{appointment.ehr_appointment_id}"
                               if appointment.ehr_appointment_id else None))
    outbox.enqueue_resource(appointment, WritebackResource.OBSERVATION, identifier, payload)

