"""EHR endpoint bookkeeping shared by the CLI, the admin portal, the demo and the launches."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers

from extensions import db
from ehr.models import EhrEndpoint, Environment
from ehr.smart import DEFAULT_SCOPES
from settings import is_loopback
from visits.models import utcnow

# The name is the slug in /hl7/v2/<name> and in CLI commands.
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


class EndpointError(Exception):
    """An endpoint cannot be added or changed; the message is one line for the operator."""


class InvalidEndpoint(EndpointError):
    """Some input (URL, name, origin, time zone...) is not acceptable. ``field`` names the
    input (an EhrEndpoint attribute) so a form can put the message next to it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class DuplicateEndpoint(InvalidEndpoint):
    """The name or the FHIR base URL is already registered (``other``: by which endpoint)."""

    def __init__(self, message: str, field: str | None = None,
                 other: str | None = None) -> None:
        super().__init__(message, field)
        self.other = other


# Changing one of these changes which EHR, client or origins a launch trusts, so the
# approval given for the old values no longer holds (``update_endpoint`` clears it).
LAUNCH_FIELDS = ("fhir_base_url", "client_id", "patient_client_id", "scopes", "environment",
                 "allowed_frame_ancestors")
# What an admin may change after creation; the name is the HL7 URL slug and stays.
EDITABLE_FIELDS = LAUNCH_FIELDS + ("site_timezone", "default_phone_region",
                                   "require_staff_sso", "link_valid_after_end_minutes",
                                   "lobby_opens_before_minutes", "clinic_phone")
# Minutes an admin may set for link validity and lobby opening: up to a week.
MAX_MINUTES = 7 * 24 * 60


@dataclass
class EndpointChange:
    """What an add or update did: the changed fields with their new values, and whether
    an existing approval was withdrawn because a launch-relevant field changed."""

    endpoint: EhrEndpoint
    changed: dict[str, Any] = field(default_factory=dict)
    approval_cleared: bool = False


class UnknownEndpoint(EndpointError):
    """No endpoint has that name."""


def normalise_fhir_base(url: str, *, require_https: bool = True) -> str:
    """The canonical form we store and compare a SMART ``iss`` with: lowercase scheme and
    host, no trailing slash, no query or fragment. https unless the host is loopback
    (``require_https=False`` for comparing, and for the demo's own sandbox)."""
    parts = urlsplit((url or "").strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidEndpoint(f"FHIR base URL must be an http(s) URL, got {url!r}",
                              "fhir_base_url")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidEndpoint("FHIR base URL must not carry a query, fragment or credentials",
                              "fhir_base_url")
    if require_https and parts.scheme.lower() != "https" and not is_loopback(parts.hostname):
        raise InvalidEndpoint(f"FHIR base URL must use https (got {url!r}); plain http is "
                              "accepted for loopback addresses only", "fhir_base_url")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "",
                       ""))


def normalise_origin(origin: str) -> str:
    """``scheme://host[:port]`` of an origin allowed to frame our pages (CSP source)."""
    parts = urlsplit((origin or "").strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname \
            or parts.path.strip("/") or parts.query or parts.fragment or "*" in parts.netloc:
        raise InvalidEndpoint(f"frame ancestor must be an origin like https://ehr.example.org, "
                              f"got {origin!r}", "allowed_frame_ancestors")
    if parts.scheme.lower() != "https" and not is_loopback(parts.hostname):
        raise InvalidEndpoint(f"frame ancestor must use https, got {origin!r}",
                              "allowed_frame_ancestors")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidEndpoint(f"unknown time zone {name!r} (use an IANA name such as "
                              "America/Chicago)", "site_timezone") from None
    return name


# Names whose admin page /admin/endpoints/<name> would be another page.
_RESERVED_NAMES = frozenset({"new", "approve"})


def check_name(name: str) -> str:
    """The endpoint's slug, or InvalidEndpoint: it appears in URLs and CLI commands."""
    if not _NAME.match(name or ""):
        raise InvalidEndpoint(f"name must be 1-64 lowercase letters, digits, '-' or '_', "
                              f"starting with a letter or digit; got {name!r}", "name")
    if name in _RESERVED_NAMES:
        raise InvalidEndpoint(f"name {name!r} is reserved; choose another", "name")
    return name


def check_client_id(client_id: str) -> str:
    if not (client_id or "").strip():
        raise InvalidEndpoint("client id must not be empty", "client_id")
    if len(client_id.strip()) > 200:
        raise InvalidEndpoint("client id must be at most 200 characters", "client_id")
    return client_id.strip()


def check_patient_client_id(client_id: str | None) -> str | None:
    """The portal (MyChart) app's own client id; empty means "the clinicians' one"."""
    if not (client_id or "").strip():
        return None
    if len(client_id.strip()) > 200:
        raise InvalidEndpoint("patient client id must be at most 200 characters",
                              "patient_client_id")
    return client_id.strip()


_PHONE_CHARACTERS = frozenset("0123456789+-(). ")


def check_clinic_phone(phone: str | None) -> str | None:
    """The clinic's number as patients should dial it (``+1 312-555-0100``, ``(312)
    555-0100 ext. 2`` is refused: digits, spaces, + - ( ) . only), or None for none. Kept
    as written, since patients read it; the page dials the digits."""
    text = (phone or "").strip()
    if not text:
        return None
    digits = sum(ch.isdigit() for ch in text)
    if len(text) > 40 or not set(text) <= _PHONE_CHARACTERS or not 3 <= digits <= 17:
        raise InvalidEndpoint("clinic phone must be a phone number (digits, spaces, + - ( ) .)",
                              "clinic_phone")
    return text


def check_environment(environment: str) -> str:
    if environment not in {e.value for e in Environment}:
        raise InvalidEndpoint(f"environment must be test or production, got {environment!r}",
                              "environment")
    return environment


def check_scopes(scopes: str | None) -> str:
    """Space-normalised scopes; the EHR launch needs ``launch`` among them."""
    scope_text = " ".join((scopes or DEFAULT_SCOPES).split())
    if "launch" not in scope_text.split():
        raise InvalidEndpoint("scopes must include 'launch' (EHR launch)", "scopes")
    return scope_text


def check_frame_ancestors(origins: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(normalise_origin(o) for o in origins if (o or "").strip()))


def check_timezone(name: str) -> str:
    """An IANA time zone name, or InvalidEndpoint."""
    return _check_timezone((name or "").strip())


def check_phone_region(region: str) -> str:
    """An ISO 3166 alpha-2 region that phonenumbers can read numbers for (upper case)."""
    value = (region or "").strip().upper()
    if value not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidEndpoint(f"phone region must be a two-letter country code such as US, "
                              f"got {region!r}", "default_phone_region")
    return value


def check_minutes(value: int | str, field_name: str) -> int:
    """A whole number of minutes between 0 and a week."""
    try:
        minutes = int(str(value).strip())
    except (TypeError, ValueError):
        raise InvalidEndpoint(f"must be a whole number of minutes, got {value!r}",
                              field_name) from None
    if not 0 <= minutes <= MAX_MINUTES:
        raise InvalidEndpoint(f"must be between 0 and {MAX_MINUTES} minutes", field_name)
    return minutes


def get_endpoint(name: str) -> EhrEndpoint | None:
    return db.session.execute(db.select(EhrEndpoint).filter_by(name=name)).scalar_one_or_none()


def endpoint_for_iss(iss: str) -> EhrEndpoint | None:
    """The endpoint whose FHIR base is this SMART ``iss`` (trailing slash and case of the
    host ignored), approved or not; None for an unknown or malformed ``iss``."""
    try:
        wanted = normalise_fhir_base(iss, require_https=False)
    except InvalidEndpoint:
        return None
    return db.session.execute(
        db.select(EhrEndpoint).filter_by(fhir_base_url=wanted)).scalar_one_or_none()


def list_endpoints() -> list[EhrEndpoint]:
    return list(db.session.execute(db.select(EhrEndpoint).order_by(EhrEndpoint.name)).scalars())


def add_endpoint(name: str, fhir_base_url: str, *, client_id: str,
                 environment: str = Environment.TEST, scopes: str | None = None,
                 frame_ancestors: Iterable[str] = (), site_timezone: str | None = None,
                 require_staff_sso: bool = False, default_phone_region: str | None = None,
                 link_valid_after_end_minutes: int | None = None,
                 lobby_opens_before_minutes: int | None = None,
                 patient_client_id: str | None = None,
                 clinic_phone: str | None = None,
                 before_commit: Callable[[EndpointChange], None] | None = None
                 ) -> EhrEndpoint:
    """Register a new, not yet approved endpoint; raise InvalidEndpoint or DuplicateEndpoint.

    Approval is a separate act (``approve_endpoint``) so that whoever adds an endpoint and
    whoever lets it launch can be different people. ``before_commit`` sees what was set
    (the admin portal adds its audit entry there, so both are saved together)."""
    check_name(name)
    base = normalise_fhir_base(fhir_base_url)
    client_id = check_client_id(client_id)
    check_environment(environment)
    scope_text = check_scopes(scopes)
    origins = check_frame_ancestors(frame_ancestors)
    if get_endpoint(name) is not None:
        raise DuplicateEndpoint(f"an endpoint named {name!r} already exists", "name")
    existing = endpoint_for_iss(base)
    if existing is not None:
        raise DuplicateEndpoint(f"{base} is already registered under another name "
                                f"({existing.name!r})", "fhir_base_url", existing.name)
    endpoint = EhrEndpoint(name=name, fhir_base_url=base, environment=str(environment),
                           client_id=client_id, scopes=scope_text,
                           patient_client_id=check_patient_client_id(patient_client_id),
                           allowed_frame_ancestors=origins,
                           require_staff_sso=bool(require_staff_sso),
                           clinic_phone=check_clinic_phone(clinic_phone))
    if site_timezone:
        endpoint.site_timezone = _check_timezone(site_timezone)
    if default_phone_region:
        endpoint.default_phone_region = check_phone_region(default_phone_region)
    if link_valid_after_end_minutes is not None:
        endpoint.link_valid_after_end_minutes = check_minutes(
            link_valid_after_end_minutes, "link_valid_after_end_minutes")
    if lobby_opens_before_minutes is not None:
        endpoint.lobby_opens_before_minutes = check_minutes(
            lobby_opens_before_minutes, "lobby_opens_before_minutes")
    db.session.add(endpoint)
    if before_commit is not None:
        db.session.flush()  # defaults filled in, so the hook sees the stored values
        before_commit(EndpointChange(endpoint, {
            name: _plain(getattr(endpoint, name)) for name in EDITABLE_FIELDS}))
    db.session.commit()
    return endpoint


def update_endpoint(name: str, *, before_commit: Callable[[EndpointChange], None] | None = None,
                    **values: Any) -> EndpointChange:
    """Change an endpoint's settings (keyword arguments named as EDITABLE_FIELDS; absent
    ones stay). A change to a launch-relevant field withdraws the approval: someone must
    approve the new EHR, client or origins again before launches are accepted."""
    unknown = set(values) - set(EDITABLE_FIELDS)
    if unknown:
        raise TypeError(f"not editable: {', '.join(sorted(unknown))}")
    endpoint = get_endpoint(name)
    if endpoint is None:
        raise UnknownEndpoint(f"no endpoint named {name!r} (see `flask endpoints list`)")
    checks: dict[str, Callable[[Any], Any]] = {
        "fhir_base_url": normalise_fhir_base, "client_id": check_client_id,
        "patient_client_id": check_patient_client_id, "environment": check_environment, "scopes": check_scopes,
        "allowed_frame_ancestors": check_frame_ancestors, "site_timezone": check_timezone,
        "default_phone_region": check_phone_region, "require_staff_sso": bool,
        "link_valid_after_end_minutes":
            lambda v: check_minutes(v, "link_valid_after_end_minutes"),
        "lobby_opens_before_minutes": lambda v: check_minutes(v, "lobby_opens_before_minutes"),
        # "" clears it (None leaves it as it is, like every field here): stored as NULL.
        "clinic_phone": check_clinic_phone,
    }
    wanted = {key: checks[key](value) for key, value in values.items() if value is not None}
    if "fhir_base_url" in wanted and wanted["fhir_base_url"] != endpoint.fhir_base_url:
        other = endpoint_for_iss(wanted["fhir_base_url"])
        if other is not None and other.id != endpoint.id:
            raise DuplicateEndpoint(f"{wanted['fhir_base_url']} is already registered under "
                                    f"another name ({other.name!r})", "fhir_base_url",
                                    other.name)
    change = EndpointChange(endpoint)
    for key, value in wanted.items():
        if _plain(getattr(endpoint, key)) != _plain(value):
            setattr(endpoint, key, value)
            change.changed[key] = _plain(value)
    if endpoint.is_approved and set(change.changed) & set(LAUNCH_FIELDS):
        endpoint.approved_by, endpoint.approved_at = None, None
        change.approval_cleared = True
    if change.changed and before_commit is not None:
        before_commit(change)
    db.session.commit()
    return change


def _plain(value: Any) -> Any:
    """A value as JSON and comparisons see it (the JSON column's list is a MutableList)."""
    return list(value) if isinstance(value, list) else value


def approve_endpoint(name: str, *, by: str, require_staff_sso: bool | None = None,
                     before_commit: Callable[[EhrEndpoint], None] | None = None
                     ) -> EhrEndpoint:
    """Let an endpoint launch; idempotent (the first approval is kept). The approver may
    also turn the staff sign-in requirement on or off (None leaves it as it is).
    ``before_commit`` runs only when this call approves (the admin portal audits there)."""
    if not (by or "").strip():
        raise InvalidEndpoint("say who approves (--by)")
    endpoint = get_endpoint(name)
    if endpoint is None:
        raise UnknownEndpoint(f"no endpoint named {name!r} (see `flask endpoints list`)")
    if not endpoint.is_approved:
        endpoint.approved_by, endpoint.approved_at = by.strip()[:200], utcnow()
        if before_commit is not None:
            before_commit(endpoint)
    if require_staff_sso is not None:
        endpoint.require_staff_sso = require_staff_sso
    db.session.commit()
    return endpoint


def endpoint_summary(endpoint: EhrEndpoint) -> dict:
    """An endpoint as listings show it (no SMS settings or certificates)."""
    return {
        "name": endpoint.name, "fhir_base_url": endpoint.fhir_base_url,
        "environment": endpoint.environment, "client_id": endpoint.client_id,
        "patient_client_id": endpoint.patient_client_id, "scopes": endpoint.scopes, "approved": endpoint.is_approved,
        "approved_by": endpoint.approved_by,
        "approved_at": endpoint.approved_at.isoformat() if endpoint.approved_at else None,
        "frame_ancestors": list(endpoint.allowed_frame_ancestors or []),
        "timezone": endpoint.site_timezone,
        "phone_region": endpoint.default_phone_region,
        "link_valid_after_end_minutes": endpoint.link_valid_after_end_minutes,
        "lobby_opens_before_minutes": endpoint.lobby_opens_before_minutes,
        "require_staff_sso": bool(endpoint.require_staff_sso),
        "clinic_phone": endpoint.clinic_phone,
    }


def ensure_endpoint(name: str, fhir_base_url: str, *, client_id: str, scopes: str,
                    environment: str = Environment.TEST, approved_by: str | None = None,
                    site_timezone: str | None = None,
                    frame_ancestors: Iterable[str] | None = None,
                    require_staff_sso: bool | None = None) -> EhrEndpoint:
    """Create or update the endpoint called ``name``; approve it when ``approved_by`` is given.

    Idempotent, so ``flask demo`` can run every time the demo starts."""
    endpoint = get_endpoint(name)
    fhir_base_url = normalise_fhir_base(fhir_base_url, require_https=False)
    if endpoint is None:
        endpoint = EhrEndpoint(name=name, fhir_base_url=fhir_base_url, environment=environment,
                               client_id=client_id)
        db.session.add(endpoint)
    endpoint.fhir_base_url = fhir_base_url
    endpoint.client_id = client_id
    endpoint.scopes = scopes
    endpoint.environment = environment
    if site_timezone:
        endpoint.site_timezone = site_timezone
    if frame_ancestors is not None:
        endpoint.allowed_frame_ancestors = [normalise_origin(o) for o in frame_ancestors]
    if require_staff_sso is not None:
        endpoint.require_staff_sso = require_staff_sso
    if approved_by and not endpoint.is_approved:
        endpoint.approved_by, endpoint.approved_at = approved_by, utcnow()
    db.session.commit()
    return endpoint
