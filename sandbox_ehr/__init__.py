"""A small SMART on FHIR R4 EHR for the demo and the tests. Off unless VV_SANDBOX is on."""
from __future__ import annotations

from flask import Blueprint, Flask

bp = Blueprint("sandbox_ehr", __name__, url_prefix="/sandbox", template_folder="templates",
               static_folder="static", static_url_path="/static")

# Lifetimes in seconds. Not environment settings: they exist so tests can shorten them.
DEFAULTS = {
    "SANDBOX_CODE_TTL_SECONDS": 60,  # authorization codes: SMART asks for short-lived
    "SANDBOX_TOKEN_TTL_SECONDS": 3600,  # access tokens and id_tokens
    "SANDBOX_LAUNCH_TTL_SECONDS": 600,  # time from the EHR's launch to the authorize call
    # The one person the staff sign-in provider (/sandbox/idp) signs in, without a form.
    "SANDBOX_IDP_USER": {"sub": "staff-0001", "email": "robin.sampleton@clinic.example",
                         "name": "Robin Sampleton"},
}


def init_app(app: Flask) -> None:
    """Mount the sandbox. Nothing is written here: ``flask sandbox seed`` (and ``flask
    demo``) create its tables and today's clinic. Every ``flask`` command builds the app,
    and a write here made each of them re-seed, and re-register our SMART client with
    that command's PUBLIC_BASE_URL (breaking a demo served on another port)."""
    from sandbox_ehr import fhir_views, idp_views, models, oauth_views, views  # noqa: F401

    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.register_blueprint(bp)


NOT_SEEDED = ("The sandbox EHR has no data yet. Seed it with `flask --app app sandbox seed` "
              "(or `flask --app app demo`, which `make demo` runs), then reload.\n")


@bp.before_request
def _require_seeded():
    """Until the sandbox is seeded, say how to seed it instead of failing on missing tables.
    Once its tables exist, that is remembered for the process."""
    from flask import Response, current_app

    if current_app.extensions.get("sandbox_ehr.seeded"):
        return None
    import sqlalchemy as sa

    from extensions import db

    if not sa.inspect(db.engines["sandbox"]).has_table("sandbox_resource"):
        return Response(NOT_SEEDED, 503, mimetype="text/plain")
    current_app.extensions["sandbox_ehr.seeded"] = True
    return None
