"""Operations: health and readiness probes, metrics, logging, error pages, i18n."""
from flask import Blueprint

bp = Blueprint("ops", __name__, template_folder="templates")

from ops import errors, events, gc_pauses, views  # noqa: E402,F401
