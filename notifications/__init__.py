"""SMS to patients and guests: planning (scheduling), words (texts), sending, senders,
opt-outs, retention, and the Twilio webhooks (views)."""
from flask import Blueprint

bp = Blueprint("notifications", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/notifications")

from notifications import models, sending, views  # noqa: E402,F401  (sending: its loop)
