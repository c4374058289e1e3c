"""Device-test context tokens (``/device-test?ctx=``): which appointment and participant a
result belongs to, so it can be written back to that patient's chart.

Signed with SECRET_KEY under its own salt (a token from any other feature never verifies
here), carrying only row ids, and expiring after DEVICE_TEST_CONTEXT_TTL_SECONDS. The
endpoint id is bound too: a token minted for one EHR never files into another's.
"""
from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from extensions import db
from visits.models import Participant

SALT = "virtual-visits.device-test-context"


class ContextInvalid(Exception):
    """The token is malformed, tampered with, or names rows that no longer match."""


class ContextExpired(ContextInvalid):
    """The token was genuine but is older than DEVICE_TEST_CONTEXT_TTL_SECONDS."""


@dataclass(frozen=True)
class DeviceTestContext:
    endpoint_id: int
    appointment_id: int
    participant_id: int


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt=SALT)


def make_token(secret_key: str, participant: Participant) -> str:
    """A context token for ``participant``'s appointment (the join page and SMS use it)."""
    appointment = participant.appointment
    return _serializer(secret_key).dumps(
        {"e": appointment.endpoint_id, "a": appointment.id, "p": participant.id})


def read_token(secret_key: str, token: str, max_age_seconds: int) -> DeviceTestContext:
    """Verify ``token`` and check its ids still belong together; raise ContextInvalid."""
    try:
        data = _serializer(secret_key).loads(token, max_age=max_age_seconds)
    except SignatureExpired:
        raise ContextExpired("device-test context expired") from None
    except BadSignature:
        raise ContextInvalid("device-test context not recognised") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), int) for k in "eap"):
        raise ContextInvalid("device-test context malformed")
    participant = db.session.get(Participant, data["p"])
    if participant is None or participant.appointment_id != data["a"] \
            or participant.appointment.endpoint_id != data["e"]:
        raise ContextInvalid("device-test context names rows that do not match")
    return DeviceTestContext(endpoint_id=data["e"], appointment_id=data["a"],
                             participant_id=data["p"])
