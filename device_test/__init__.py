"""Device test: the page patients use to check speaker, microphone, camera, connection
and a test call, the results API, and the result's write-back to the EHR."""
from flask import Blueprint

bp = Blueprint("device_test", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/device_test")

from device_test import models, views  # noqa: E402,F401
