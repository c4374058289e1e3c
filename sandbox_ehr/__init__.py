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
    "SANDBOX_SEED_ON_START": True,  # seed today's clinic when the app starts
    # The one person the staff sign-in provider (/sandbox/idp) signs in, without a form.
    "SANDBOX_IDP_USER": {"sub": "staff-0001", "email": "robin.sampleton@clinic.example",
                         "name": "Robin Sampleton"},
}


def init_app(app: Flask) -> None:
    """Mount the sandbox, create its tables on their own bind, and seed today's clinic."""
    from sqlalchemy.exc import IntegrityError

    from extensions import db
    from sandbox_ehr import fhir_views, idp_views, models, oauth_views, views  # noqa: F401
    from sandbox_ehr.seed import seed

    for key, value in DEFAULTS.items():
        app.config.setdefault(key, value)
    app.register_blueprint(bp)
    with app.app_context():
        db.create_all(bind_key="sandbox")
        if app.config["SANDBOX_SEED_ON_START"]:
            try:
                seed()
            except IntegrityError:  # another process started at the same moment and seeded
                db.session.rollback()
        db.session.remove()
