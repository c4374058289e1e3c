"""EHR endpoint bookkeeping shared by the CLI, the admin portal, the demo and the launches."""
from __future__ import annotations

import re
from typing import Iterable
from urllib.parse import urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

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
    """Some input (URL, name, origin, time zone...) is not acceptable."""


class DuplicateEndpoint(EndpointError):
    """The name or the FHIR base URL is already registered."""


class UnknownEndpoint(EndpointError):
    """No endpoint has that name."""


def normalise_fhir_base(url: str, *, require_https: bool = True) -> str:
    """The canonical form we store and compare a SMART ``iss`` with: lowercase scheme and
    host, no trailing slash, no query or fragment. https unless the host is loopback
    (``require_https=False`` for comparing, and for the demo's own sandbox)."""
    parts = urlsplit((url or "").strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise InvalidEndpoint(f"FHIR base URL must be an http(s) URL, got {url!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise InvalidEndpoint("FHIR base URL must not carry a query, fragment or credentials")
    if require_https and parts.scheme.lower() != "https" and not is_loopback(parts.hostname):
        raise InvalidEndpoint(f"FHIR base URL must use https (got {url!r}); plain http is "
                              "accepted for loopback addresses only")
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "",
                       ""))


def normalise_origin(origin: str) -> str:
    """``scheme://host[:port]`` of an origin allowed to frame our pages (CSP source)."""
    parts = urlsplit((origin or "").strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname \
            or parts.path.strip("/") or parts.query or parts.fragment or "*" in parts.netloc:
        raise InvalidEndpoint(f"frame ancestor must be an origin like https://ehr.example.org, "
                              f"got {origin!r}")
    if parts.scheme.lower() != "https" and not is_loopback(parts.hostname):
        raise InvalidEndpoint(f"frame ancestor must use https, got {origin!r}")
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def _check_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidEndpoint(f"unknown time zone {name!r} (use an IANA name such as "
                              "America/Chicago)") from None
    return name


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
                 require_staff_sso: bool = False) -> EhrEndpoint:
    """Register a new, not yet approved endpoint; raise InvalidEndpoint or DuplicateEndpoint.

    Approval is a separate act (``approve_endpoint``) so that whoever adds an endpoint and
    whoever lets it launch can be different people."""
    if not _NAME.match(name or ""):
        raise InvalidEndpoint(f"name must be 1-64 lowercase letters, digits, '-' or '_', "
                              f"starting with a letter or digit; got {name!r}")
    base = normalise_fhir_base(fhir_base_url)
    if not (client_id or "").strip():
        raise InvalidEndpoint("client id must not be empty")
    if environment not in {e.value for e in Environment}:
        raise InvalidEndpoint(f"environment must be test or production, got {environment!r}")
    scope_text = " ".join((scopes or DEFAULT_SCOPES).split())
    if "launch" not in scope_text.split():
        raise InvalidEndpoint("scopes must include 'launch' (EHR launch)")
    origins = list(dict.fromkeys(normalise_origin(o) for o in frame_ancestors))
    if get_endpoint(name) is not None:
        raise DuplicateEndpoint(f"an endpoint named {name!r} already exists")
    if endpoint_for_iss(base) is not None:
        raise DuplicateEndpoint(f"{base} is already registered under another name")
    endpoint = EhrEndpoint(name=name, fhir_base_url=base, environment=environment,
                           client_id=client_id.strip(), scopes=scope_text,
                           allowed_frame_ancestors=origins,
                           require_staff_sso=bool(require_staff_sso))
    if site_timezone:
        endpoint.site_timezone = _check_timezone(site_timezone)
    db.session.add(endpoint)
    db.session.commit()
    return endpoint


def approve_endpoint(name: str, *, by: str,
                     require_staff_sso: bool | None = None) -> EhrEndpoint:
    """Let an endpoint launch; idempotent (the first approval is kept). The approver may
    also turn the staff sign-in requirement on or off (None leaves it as it is)."""
    if not (by or "").strip():
        raise InvalidEndpoint("say who approves (--by)")
    endpoint = get_endpoint(name)
    if endpoint is None:
        raise UnknownEndpoint(f"no endpoint named {name!r} (see `flask endpoints list`)")
    if not endpoint.is_approved:
        endpoint.approved_by, endpoint.approved_at = by.strip(), utcnow()
    if require_staff_sso is not None:
        endpoint.require_staff_sso = require_staff_sso
    db.session.commit()
    return endpoint


def endpoint_summary(endpoint: EhrEndpoint) -> dict:
    """An endpoint as listings show it (no SMS settings or certificates)."""
    return {
        "name": endpoint.name, "fhir_base_url": endpoint.fhir_base_url,
        "environment": endpoint.environment, "client_id": endpoint.client_id,
        "scopes": endpoint.scopes, "approved": endpoint.is_approved,
        "approved_by": endpoint.approved_by,
        "approved_at": endpoint.approved_at.isoformat() if endpoint.approved_at else None,
        "frame_ancestors": list(endpoint.allowed_frame_ancestors or []),
        "timezone": endpoint.site_timezone,
        "require_staff_sso": bool(endpoint.require_staff_sso),
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
