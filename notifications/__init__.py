"""notifications feature (built in a later issue)."""
from flask import Blueprint

bp = Blueprint("notifications", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/notifications")

from notifications import models, views  # noqa: E402,F401
