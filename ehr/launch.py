"""The steps every SMART EHR launch shares, whoever launches (a clinician from the EHR, a
patient from the portal): check the ``iss``, build the authorize redirect, trade the
code and validate the id_token, and find the Appointment the launch is about.

Each refusal is a ``LaunchFailed`` carrying a reason code; the launching feature adds
its own checks (a Practitioner for providers, the appointment's patient for patients)
and turns reasons into pages for its audience. Nothing here touches Flask's request or
session, and nothing is written to the database.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ehr import smart
from ehr.errors import (EhrUnavailable, FhirForbidden, FhirNotFound, FhirRequestError,
                        FhirUnauthorized, InvalidIdToken, SmartError, TokenRefused, UntrustedUrl)
from ehr.fhir import FhirClient, relative_reference
from ehr.models import EhrEndpoint
from ehr.services import endpoint_for_iss
from extensions import db
from ops import pending as held
from ops.framing import FrameLoad

log = logging.getLogger(__name__)


class LaunchFailed(Exception):
    """A launch that cannot go on. ``reason`` picks the page; ``detail`` holds the few
    values it shows (an iss, an endpoint name, an OAuth error code), never PHI."""

    def __init__(self, reason: str, status: int = 400, endpoint: EhrEndpoint | None = None,
                 **detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.endpoint = endpoint
        self.detail = detail


@dataclass(frozen=True)
class AuthorizeStep:
    """Where to send the browser, and what to keep until it comes back."""

    url: str
    pending: smart.PendingLaunch
    endpoint: EhrEndpoint


def begin(iss: str | None, launch: str | None, *, redirect_uri: str,
          scope: str | None = None, audience: str = "launch",
          patient: bool = False, frame: FrameLoad | None = None) -> AuthorizeStep:
    """Check the launch request against our approved endpoints and build the authorize
    redirect. ``scope`` defaults to the endpoint's own (the clinician scopes); a
    ``patient`` (portal) launch presents the endpoint's patient client id when it has one.
    ``frame``: the request loads a frame for another origin's page, which the endpoint
    must allow to embed us, or the browser would show an empty frame after the launch."""
    if not iss or not launch:
        raise LaunchFailed("missing_launch_params", 400, param="iss" if not iss else "launch")
    endpoint = endpoint_for_iss(iss)
    if endpoint is None:
        log.warning("%s from an unknown iss refused", audience, extra={"reason": "unknown_iss"})
        raise LaunchFailed("unknown_iss", 403, iss=iss[:300])
    if frame is not None and not frame.allowed_by(endpoint.allowed_frame_ancestors or []):
        log.warning("%s in a frame of an origin not allowed refused", audience,
                    extra={"reason": "frame_not_allowed", "endpoint": endpoint.name,
                           "origin": frame.origin})
        raise LaunchFailed("frame_not_allowed", 403, endpoint=endpoint, name=endpoint.name,
                           origin=(frame.origin or "")[:300])
    if not endpoint.is_approved:
        log.warning("%s from an unapproved endpoint refused", audience,
                    extra={"reason": "unapproved_endpoint", "endpoint": endpoint.name})
        raise LaunchFailed("unapproved_endpoint", 403, endpoint=endpoint, name=endpoint.name)
    try:
        config = smart.discover(iss)
    except EhrUnavailable as exc:
        log_failure(audience, "ehr_unavailable", endpoint, exc)
        raise LaunchFailed("ehr_unavailable", 503, endpoint=endpoint) from None
    except SmartError as exc:
        log_failure(audience, "ehr_misconfigured", endpoint, exc)
        raise LaunchFailed("ehr_misconfigured", 502, endpoint=endpoint,
                           iss=endpoint.fhir_base_url) from None
    url, pending = smart.authorization_request(
        config, iss=iss, launch=launch, client_id=endpoint.launch_client_id(patient=patient),
        redirect_uri=redirect_uri,
        scope=scope or endpoint.scopes or smart.DEFAULT_SCOPES, endpoint_id=endpoint.id)
    return AuthorizeStep(url=url, pending=pending, endpoint=endpoint)


# Launches begun but not yet back; more than a few at once means abandoned attempts.
MAX_PENDING = 5


def hold_pending(store: MutableMapping[str, Any], key: str,
                 pending: smart.PendingLaunch) -> None:
    """Keep a begun launch in ``store`` (the signed session) under its ``state``, dropping
    the oldest beyond MAX_PENDING."""
    held.hold(store, key, pending.state, pending.to_dict(), limit=MAX_PENDING)


def take_pending(store: MutableMapping[str, Any], key: str,
                 state: str | None) -> smart.PendingLaunch | None:
    """The launch begun with ``state``, removed so it is used once; None if unknown."""
    data = held.take(store, key, state)
    return smart.PendingLaunch.from_dict(data) if data else None


def pending_endpoint(pending: smart.PendingLaunch) -> EhrEndpoint:
    """The endpoint a pending launch began with, if it is still there and approved."""
    return approved_endpoint(pending.endpoint_id)


def approved_endpoint(endpoint_id: int | None) -> EhrEndpoint:
    """The endpoint with this id, if it is still there and approved."""
    endpoint = db.session.get(EhrEndpoint, endpoint_id) if endpoint_id else None
    if endpoint is None or not endpoint.is_approved:
        raise LaunchFailed("unapproved_endpoint", 403, endpoint=endpoint,
                           name=endpoint.name if endpoint else "?")
    return endpoint


def authenticate(endpoint: EhrEndpoint, pending: smart.PendingLaunch, *, code: str,
                 redirect_uri: str) -> smart.LaunchContext:
    """Token exchange and id_token validation: who launched, with which context. Whether
    that kind of user may use this launch is the caller's check."""
    client_id = pending.client_id or endpoint.client_id
    try:
        token = smart.exchange_code(pending, code=code, client_id=client_id,
                                    redirect_uri=redirect_uri)
    except TokenRefused as exc:
        raise LaunchFailed("token_refused", 400, error=safe_error_code(exc.error)) from None
    except EhrUnavailable:
        raise LaunchFailed("ehr_unavailable", 503) from None
    if not token.id_token:
        raise LaunchFailed("missing_id_token", 400)
    if not pending.jwks_uri:
        raise LaunchFailed("ehr_misconfigured", 502, iss=endpoint.fhir_base_url)
    try:
        jwks = smart.issuer_keys(pending.jwks_uri, token.id_token)
        # The FHIR base is the SMART issuer; an EHR with a separate OpenID issuer names it
        # in its discovery document, which came from that same approved base.
        issuers = {endpoint.fhir_base_url, pending.iss} | ({pending.issuer} if pending.issuer
                                                           else set())
        id_token = smart.validate_id_token(token.id_token, jwks, issuers=issuers,
                                           client_id=client_id, nonce=pending.nonce)
        return smart.launch_context(token, id_token, endpoint.fhir_base_url)
    except EhrUnavailable:
        raise LaunchFailed("ehr_unavailable", 503) from None
    except InvalidIdToken as exc:
        log.warning("id_token rejected", extra={"endpoint": endpoint.name, "check": exc.reason})
        raise LaunchFailed("id_token_invalid", 400) from None


@contextmanager
def fhir_refusals(client: FhirClient, reference: str = "") -> Iterator[None]:
    """FHIR client errors as launch refusals: not found, not allowed, down, misbehaving."""
    try:
        yield
    except FhirNotFound:
        raise LaunchFailed("appointment_not_found", 404, reference=reference) from None
    except (FhirUnauthorized, FhirForbidden, FhirRequestError):
        raise LaunchFailed("fhir_refused", 403) from None
    except EhrUnavailable:
        raise LaunchFailed("ehr_unavailable", 503) from None
    except UntrustedUrl:
        raise LaunchFailed("ehr_misconfigured", 502, iss=client.base_url) from None


def appointment_in_context(client: FhirClient,
                           context: smart.LaunchContext) -> dict[str, Any] | None:
    """The Appointment from fhirContext, else through the launch's Encounter
    (``Encounter.appointment``, else an Appointment sharing one of its identifiers);
    None when the launch names neither."""
    reference = context.appointment_ref
    with fhir_refusals(client, reference or context.encounter_ref or ""):
        if reference is None and context.encounter_ref:
            encounter = client.read_reference(context.encounter_ref)
            reference = _appointment_of_encounter(encounter, client)
            if reference is None:
                return _appointment_by_identifiers(encounter, client)
        if reference is None:
            return None
        return client.read_reference(reference)


def _appointment_of_encounter(encounter: dict[str, Any], client: FhirClient) -> str | None:
    for item in encounter.get("appointment") or []:
        value = (item or {}).get("reference")
        if not isinstance(value, str):
            continue
        try:
            reference = relative_reference(value, client.base_url)
        except (UntrustedUrl, ValueError):
            continue
        if reference.startswith("Appointment/"):
            return reference
    return None


def _appointment_by_identifiers(encounter: dict[str, Any],
                                client: FhirClient) -> dict[str, Any] | None:
    """Epic-style: the Appointment shares an identifier (CSN) with the Encounter."""
    for identifier in encounter.get("identifier") or []:
        system, value = identifier.get("system"), identifier.get("value")
        if not value:
            continue
        token = f"{system}|{value}" if system else value
        matches = client.search("Appointment", identifier=token)
        if len(matches) == 1:
            return matches[0]
    return None


def patients_of(resource: dict[str, Any], fhir_base_url: str) -> set[str]:
    """``Patient/<id>`` references among an Appointment's participants."""
    patients = set()
    for participant in resource.get("participant") or []:
        value = (participant.get("actor") or {}).get("reference")
        if isinstance(value, str):
            try:
                reference = relative_reference(value, fhir_base_url)
            except (UntrustedUrl, ValueError):
                continue
            if reference.startswith("Patient/"):
                patients.add(reference)
    return patients


def safe_error_code(value: str | None) -> str:
    """An OAuth error code safe to show and log: letters, digits and _ only, short."""
    cleaned = "".join(ch for ch in (value or "") if ch.isalnum() or ch == "_")
    return cleaned[:64] or "unknown_error"


def log_failure(audience: str, reason: str, endpoint: EhrEndpoint | None,
                exc: BaseException) -> None:
    """One log line per refused launch: reason, endpoint, exception class; never PHI."""
    log.warning("%s failed", audience,
                extra={"reason": reason, "endpoint": endpoint.name if endpoint else None,
                       "error": type(exc).__name__})
