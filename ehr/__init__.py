"""EHR integration: endpoints, SMART client, FHIR client, write-back outbox (the HL7 v2
feed is `hl7feed/`)."""
from flask import Blueprint

bp = Blueprint("ehr", __name__)

from ehr import audit_trail, models, views  # noqa: E402,F401
