"""provider launch feature (built in a later issue)."""
from flask import Blueprint

bp = Blueprint("provider_launch", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/provider_launch")

from provider_launch import views  # noqa: E402,F401
