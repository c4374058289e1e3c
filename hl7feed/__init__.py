"""The inbound HL7 v2 feed: signed SIU over HTTPS (and MLLP), certificates, ACKs."""
from flask import Blueprint

bp = Blueprint("hl7feed", __name__)

from hl7feed import models, views  # noqa: E402,F401
