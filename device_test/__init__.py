"""device test feature (built in a later issue)."""
from flask import Blueprint

bp = Blueprint("device_test", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/device_test")

from device_test import models, views  # noqa: E402,F401
