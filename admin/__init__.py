"""admin feature (built in a later issue)."""
from flask import Blueprint

bp = Blueprint("admin", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/admin")

from admin import views  # noqa: E402,F401
