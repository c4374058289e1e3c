"""Admin: integration records — every value the EHR analyst types into the EHR for one
endpoint, each ready to copy.

Values are built from PUBLIC_BASE_URL joined with ``url_for`` paths (never typed out), so
a renamed route or a moved installation cannot leave this page out of date.
"""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, render_template, request
from flask_babel import gettext as _
from itsdangerous import URLSafeTimedSerializer
from werkzeug.routing import BuildError

from admin import bp
from admin.auth import require_role
from admin.lookup import endpoint_or_404
from ehr.models import EhrEndpoint

SIGNATURE_HEADER = ("X-Signature: <base64 of the signature of the raw body: RSA PKCS#1 v1.5 "
                    "with SHA-256 for an RSA certificate, ECDSA with SHA-256 for an EC one>")


@dataclass(frozen=True)
class Record:
    """One value to enter in the EHR. ``key`` names its field id and test hook."""

    key: str
    label: str
    value: str
    help: str = ""


def _path(route: str, **values) -> str | None:
    """A route's path, or None when that feature is not part of this installation.

    Built with the URL map directly rather than ``url_for``: the HL7 route's variable is
    called ``endpoint``, which ``url_for`` takes as its own first argument."""
    adapter = current_app.url_map.bind("localhost", script_name=request.script_root or "/")
    try:
        return adapter.build(route, values, force_external=False)
    except BuildError:
        return None


def device_test_example_token(secret_key: str, endpoint: EhrEndpoint) -> str:
    """A context token shaped like the real ones for this endpoint but naming no
    appointment (ids 0), so it shows the format and can never file a result anywhere."""
    from device_test.context import SALT

    return URLSafeTimedSerializer(secret_key, salt=SALT).dumps(
        {"e": endpoint.id, "a": 0, "p": 0})


def integration_records(endpoint: EhrEndpoint, *, public_base_url: str,
                        secret_key: str, patient_scopes: str) -> list[Record]:
    """The values for ``endpoint``, in the order an analyst usually enters them."""
    from ehr.backend_auth import BACKEND_SCOPES
    from ehr.smart import DEFAULT_SCOPES

    base = public_base_url.rstrip("/")
    records = [
        Record("fhir_base", _("FHIR base URL (iss) we expect"), endpoint.fhir_base_url,
               _("Launches whose iss differs from this are refused.")),
        Record("client_id", _("Client id"), endpoint.client_id,
               _("The id the EHR registered Virtual Visits under; it must match exactly.")),
    ]
    if endpoint.patient_client_id:
        records.append(Record(
            "patient_client_id", _("Patient (MyChart) client id"), endpoint.patient_client_id,
            _("The patient-facing app's own registration; portal launches present it.")))
    paths = {
        "provider_launch": _path("provider_launch.launch"),
        "provider_callback": _path("provider_launch.callback"),
        "patient_launch": _path("patient_join.patient_launch"),
        "patient_callback": _path("patient_join.patient_launch_callback"),
        "join": _path("patient_join.link", token="TOKEN"),
        "device_test": _path("device_test.device_test"),
        "jwks": _path("ehr.jwks"),
        "hl7": _path("hl7feed.intake", endpoint=endpoint.name),
    }
    if paths["provider_launch"]:
        records.append(Record("provider_launch_url", _("Provider launch URL"),
                              base + paths["provider_launch"],
                              _("The SMART EHR launch URL of the provider activity (Hyperspace, "
                                "Haiku, Canto). The EHR adds iss and launch.")))
    if paths["patient_launch"]:
        records.append(Record("patient_launch_url", _("Patient (MyChart) launch URL"),
                              base + paths["patient_launch"],
                              _("The SMART EHR launch URL of the patient portal activity.")))
    if paths["provider_callback"]:
        records.append(Record("provider_redirect_uri", _("Redirect URI (provider launch)"),
                              base + paths["provider_callback"],
                              _("Register it exactly, with no trailing slash.")))
    if paths["patient_callback"]:
        records.append(Record("patient_redirect_uri", _("Redirect URI (patient launch)"),
                              base + paths["patient_callback"],
                              _("Register it too if patients join from the portal.")))
    if paths["join"]:
        records.append(Record("sms_join_base", _("SMS join link base"),
                              base + paths["join"].removesuffix("TOKEN"),
                              _("Texts carry this followed by a one-time token; allow it in "
                                "any link filter or SMS allow-list.")))
    if paths["device_test"]:
        example = device_test_example_token(secret_key, endpoint)
        records.append(Record(
            "device_test_url", _("Device test launch URL"),
            base + paths["device_test"] + "?ctx=<context token>",
            _("The ctx parameter is a context token Virtual Visits makes itself for one "
              "participant of one appointment (signed with this installation's secret, bound "
              "to this endpoint, valid for %(days)s days); it reaches patients in their text "
              "and on the join page, so the EHR never makes one. Link to the address without "
              "?ctx= for a test that is not tied to an appointment.",
              days=current_app.config["DEVICE_TEST_CONTEXT_TTL_SECONDS"] // 86400)))
        records.append(Record(
            "device_test_example", _("Device test URL, example with a context token"),
            f"{base}{paths['device_test']}?ctx={example}",
            _("An example of the format for this endpoint; it names no appointment, so a "
              "result from it is stored anonymously.")))
    if paths["jwks"]:
        records.append(Record("jwks_url", _("JWKS URL (our public keys)"), base + paths["jwks"],
                              _("For private_key_jwt: the EHR verifies our client assertions "
                                "with these keys.")))
    if paths["hl7"]:
        records.append(Record("hl7_url", _("HL7 v2 endpoint URL"), base + paths["hl7"],
                              _("The interface engine POSTs signed SIU messages (S12, S13, "
                                "S14, S15, S17, S26) here over HTTPS.")))
        records.append(Record("hl7_signature_header", _("HL7 signature header"),
                              SIGNATURE_HEADER,
                              _("Sign the exact bytes of the body with the key of a "
                                "certificate uploaded for this endpoint.")))
    records += [
        Record("provider_scopes", _("Scopes to register (provider launch)"),
               endpoint.scopes or DEFAULT_SCOPES),
        Record("patient_scopes", _("Scopes to register (patient launch)"), patient_scopes),
        Record("backend_scopes", _("Scopes to register (backend services, write-backs)"),
               BACKEND_SCOPES,
               _("For the client_credentials grant that writes AuditEvents and device-test "
                 "Observations back to the chart.")),
    ]
    return records


@bp.route("/endpoints/<name>/integration")
@require_role()
def integration(name):
    """Both roles: the values to copy into the EHR for this endpoint."""
    endpoint = endpoint_or_404(name)
    config = current_app.config
    records = integration_records(endpoint, public_base_url=config["PUBLIC_BASE_URL"],
                                  secret_key=config["SECRET_KEY"],
                                  patient_scopes=config["PATIENT_LAUNCH_SCOPES"])
    return render_template("admin/integration.html", endpoint=endpoint, records=records,
                           frame_origins=list(endpoint.allowed_frame_ancestors or []))
