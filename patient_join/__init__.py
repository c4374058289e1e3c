"""Patient side: the SMS join link, the MyChart launch, the join page and the patient's socket."""
from flask import Blueprint

bp = Blueprint("patient_join", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/patient_join")

from patient_join import events, views  # noqa: E402,F401
