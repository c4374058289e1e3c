"""Admin portal: endpoints, approval, SMS set-up, certificates, integration records."""
from flask import Blueprint

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates",
               static_folder="static", static_url_path="/static")

from admin import auth, models, views  # noqa: E402,F401
