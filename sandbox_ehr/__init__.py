"""A small SMART on FHIR R4 EHR for the demo and the tests. Off unless VV_SANDBOX is on."""
from flask import Blueprint, Flask

bp = Blueprint("sandbox_ehr", __name__, url_prefix="/sandbox", template_folder="templates",
               static_folder="static", static_url_path="/static")


def init_app(app: Flask) -> None:
    """Mount the sandbox; create_app() calls this only when the setting is on."""
    from sandbox_ehr import views  # noqa: F401

    app.register_blueprint(bp)
