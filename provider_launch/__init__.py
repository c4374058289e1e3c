"""Provider side: SMART EHR launch, the visit page, admit."""
from flask import Blueprint

bp = Blueprint("provider_launch", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/provider_launch")

from provider_launch import events, launch_views, visit_views  # noqa: E402,F401
