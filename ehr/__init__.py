"""EHR integration: SMART client, FHIR client, write-back outbox, HL7 v2 intake."""
from flask import Blueprint

bp = Blueprint("ehr", __name__)

from ehr import audit_trail, models, views  # noqa: E402,F401
