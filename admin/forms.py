"""The endpoint form: reading the posted fields, checking each one with the same rules the
CLI uses (``ehr.services``), and saying what is wrong next to the field, in the admin's
language. Plain ``request.form`` parsing: CSRF is already checked for every admin POST
(``admin.auth``), and the rules live in the service, so WTForms would add nothing here.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from zoneinfo import available_timezones

import phonenumbers
from flask_babel import lazy_gettext as _l

from ehr import services
from ehr.models import EhrEndpoint, Environment
from ehr.smart import DEFAULT_SCOPES

# Every field of the form, in page order (the error summary follows it).
FIELDS = ("name", "fhir_base_url", "environment", "client_id", "patient_client_id", "scopes",
          "allowed_frame_ancestors", "site_timezone", "default_phone_region",
          "require_staff_sso", "link_valid_after_end_minutes", "lobby_opens_before_minutes",
          "clinic_phone")

LABELS = {
    "name": _l("Name"),
    "fhir_base_url": _l("FHIR base URL"),
    "environment": _l("Environment"),
    "client_id": _l("Client id"),
    "patient_client_id": _l("Patient (MyChart) client id"),
    "scopes": _l("Scopes"),
    "allowed_frame_ancestors": _l("Origins allowed to embed visits"),
    "site_timezone": _l("Clinic time zone"),
    "default_phone_region": _l("Default phone region"),
    "require_staff_sso": _l("Staff must sign in with the organization's account"),
    "link_valid_after_end_minutes": _l("Join links stay valid after the visit ends (minutes)"),
    "lobby_opens_before_minutes": _l("Waiting room opens before the start (minutes)"),
    "clinic_phone": _l("Clinic phone"),
}

# What to do, per field, when the service refuses its value.
FIELD_ERRORS = {
    "name": _l("Use 1 to 64 lowercase letters, digits, - or _, starting with a letter or "
               "digit (for example epic-test)."),
    "fhir_base_url": _l("Enter the FHIR base URL the EHR sends as iss, starting with "
                        "https:// (plain http only for this computer), without a query or "
                        "fragment."),
    "environment": _l("Choose test or production."),
    "client_id": _l("Enter the client id the EHR gave Virtual Visits (at most 200 "
                    "characters)."),
    "patient_client_id": _l("Enter the patient app's client id (at most 200 characters), or "
                            "leave it empty."),
    "scopes": _l("The scopes must include launch (for example: launch openid fhirUser "
                 "user/*.rs)."),
    "site_timezone": _l("Choose a time zone from the list, such as America/Chicago."),
    "default_phone_region": _l("Choose a country from the list."),
    "link_valid_after_end_minutes": _l("Enter a whole number of minutes from 0 to 10080 "
                                       "(one week)."),
    "lobby_opens_before_minutes": _l("Enter a whole number of minutes from 0 to 10080 "
                                     "(one week)."),
    "clinic_phone": _l("Enter a phone number with digits, spaces and + - ( ) . only (for "
                       "example +1 312-555-0100), or leave it empty."),
}
ORIGIN_ERROR = _l("“%(value)s” is not an origin. Write one per line as https://host or "
                  "https://host:port, without a path.")
DUPLICATE_NAME = _l("An endpoint named %(value)s already exists: choose another name.")
DUPLICATE_BASE = _l("This FHIR base URL is already registered as %(other)s. Edit that "
                    "endpoint instead.")


@dataclass
class EndpointForm:
    """The submitted (or stored) values as the page shows them, and errors per field."""

    values: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    # Checked values, ready for ``services.add_endpoint`` / ``update_endpoint``.
    clean: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error_list(self) -> list[tuple[str, str]]:
        """(field, message) in page order, for the summary at the top."""
        return [(name, self.errors[name]) for name in FIELDS if name in self.errors]


def blank() -> EndpointForm:
    """A new endpoint's form with the defaults a new endpoint gets."""
    return EndpointForm(values={
        "name": "", "fhir_base_url": "", "environment": Environment.TEST.value,
        "client_id": "", "patient_client_id": "", "scopes": DEFAULT_SCOPES, "allowed_frame_ancestors": "",
        "site_timezone": "America/Chicago", "default_phone_region": "US",
        "require_staff_sso": False, "link_valid_after_end_minutes": "120",
        "lobby_opens_before_minutes": "30", "clinic_phone": ""})


def from_endpoint(endpoint: EhrEndpoint) -> EndpointForm:
    return EndpointForm(values={
        "name": endpoint.name, "fhir_base_url": endpoint.fhir_base_url,
        "environment": endpoint.environment, "client_id": endpoint.client_id,
        "patient_client_id": endpoint.patient_client_id or "", "scopes": endpoint.scopes,
        "allowed_frame_ancestors": "\n".join(endpoint.allowed_frame_ancestors or []),
        "site_timezone": endpoint.site_timezone,
        "default_phone_region": endpoint.default_phone_region,
        "require_staff_sso": bool(endpoint.require_staff_sso),
        "link_valid_after_end_minutes": str(endpoint.link_valid_after_end_minutes),
        "lobby_opens_before_minutes": str(endpoint.lobby_opens_before_minutes),
        "clinic_phone": endpoint.clinic_phone or ""})


def read(posted: Mapping[str, str], *, creating: bool) -> EndpointForm:
    """Check every posted field (the name only when creating: it never changes)."""
    values = {name: (posted.get(name) or "").strip() for name in FIELDS}
    values["require_staff_sso"] = posted.get("require_staff_sso") in ("1", "on", "true", "y")
    values["default_phone_region"] = values["default_phone_region"].upper()
    form = EndpointForm(values=values)
    checks: dict[str, Callable[[Any], Any]] = {
        "fhir_base_url": services.normalise_fhir_base,
        "environment": services.check_environment,
        "client_id": services.check_client_id,
        # "" (not None) for an empty field, so an update clears a stored one.
        "patient_client_id": lambda v: services.check_patient_client_id(v) or "",
        "scopes": lambda v: services.check_scopes(v or " "),
        "site_timezone": services.check_timezone,
        "default_phone_region": services.check_phone_region,
        "link_valid_after_end_minutes":
            lambda v: services.check_minutes(v, "link_valid_after_end_minutes"),
        "lobby_opens_before_minutes":
            lambda v: services.check_minutes(v, "lobby_opens_before_minutes"),
        "clinic_phone": lambda v: services.check_clinic_phone(v) or "",
    }
    if creating:
        checks = {"name": services.check_name, **checks}
    for name, check in checks.items():
        try:
            form.clean[name] = check(values[name])
        except services.InvalidEndpoint:
            form.errors[name] = str(FIELD_ERRORS[name])
    origins = []
    for line in values["allowed_frame_ancestors"].splitlines():
        if not line.strip():
            continue
        try:
            origins.append(services.normalise_origin(line))
        except services.InvalidEndpoint:
            form.errors["allowed_frame_ancestors"] = str(ORIGIN_ERROR % {"value": line.strip()})
            break
    form.clean["allowed_frame_ancestors"] = list(dict.fromkeys(origins))
    form.clean["require_staff_sso"] = values["require_staff_sso"]
    return form


def refused(form: EndpointForm, error: services.InvalidEndpoint) -> EndpointForm:
    """Put a refusal from the service (a duplicate name or FHIR base) on its field."""
    if isinstance(error, services.DuplicateEndpoint) and error.field == "fhir_base_url":
        form.errors["fhir_base_url"] = str(DUPLICATE_BASE % {"other": error.other or "?"})
    elif isinstance(error, services.DuplicateEndpoint):
        form.errors["name"] = str(DUPLICATE_NAME % {"value": form.values["name"]})
    else:
        name = error.field if error.field in FIELD_ERRORS else "name"
        form.errors[name] = str(FIELD_ERRORS[name])
    return form


@functools.cache
def timezone_choices() -> tuple[str, ...]:
    """IANA names for the time zone list (the deprecated aliases left out)."""
    return tuple(sorted(zone for zone in available_timezones()
                        if "/" in zone and not zone.startswith(("Etc/", "SystemV/", "US/"))))


@functools.lru_cache(maxsize=16)
def region_choices(locale: str = "en") -> tuple[tuple[str, str], ...]:
    """(code, country name) for every region phonenumbers reads numbers for."""
    from babel import Locale

    try:
        names = Locale.parse(locale.replace("-", "_")).territories
    except (ValueError, TypeError):
        names = Locale("en").territories
    return tuple(sorted(((code, names.get(code, code))
                         for code in phonenumbers.SUPPORTED_REGIONS), key=lambda item: item[1]))
