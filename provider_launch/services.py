"""The provider's SMART EHR launch, start to finish, without Flask's request or session.

``begin_launch`` checks the ``iss`` against our approved endpoints and builds the
authorize redirect; ``authenticate_launch`` trades the code and validates the id_token;
``finish_launch`` finds the appointment (fhirContext, else the encounter), creates the
visit from FHIR if we never heard of it, and records a LaunchSession. Between them, an
endpoint that requires staff single sign-on sends a not yet linked EHR user to the
organization's provider first (``staff_sso_needed``).
Every refusal is a ``LaunchFailed`` with a reason code the view turns into a page;
nothing is written unless it all works.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from ehr import launch as ehr_launch
from ehr import smart
from ehr.errors import EhrUnavailable, FhirRequestError, UntrustedUrl
from ehr.fhir import FhirClient
from ehr.launch import AuthorizeStep, LaunchFailed, safe_error_code  # noqa: F401  (views use them from here)
from ehr.models import EhrEndpoint
from ehr.names import display_name
from extensions import db
from ops.framing import FrameLoad
from provider_launch.auth import create_launch_session
from staff_sso import services as staff_sso
from staff_sso.oidc import StaffIdentity
from staff_sso.services import SsoConfig
from visits.appointments import (
    PROVIDER_LAUNCH,
    AppointmentUnusable,
    ensure_provider,
    fhir_identifiers,
    upsert_from_fhir,
)
from visits.models import AuditLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompletedLaunch:
    """A successful launch: the visit and the raw session id for the browser's cookie."""

    appointment_id: int
    participant_id: int
    endpoint: EhrEndpoint
    session_id: str = field(repr=False)


def begin_launch(iss: str | None, launch: str | None, *, redirect_uri: str,
                 frame: FrameLoad | None = None) -> AuthorizeStep:
    """Check the launch request (and the frame it loads into, if any) and build the
    authorize redirect (nothing is stored)."""
    return ehr_launch.begin(iss, launch, redirect_uri=redirect_uri, audience="provider launch",
                            frame=frame)


def launch_endpoint(endpoint_id: int | None) -> EhrEndpoint:
    """The endpoint a launch began with, if it is still there and approved."""
    return ehr_launch.approved_endpoint(endpoint_id)


@dataclass(frozen=True)
class AuthenticatedLaunch:
    """The EHR confirmed who launched and with which context; nothing is stored yet."""

    endpoint: EhrEndpoint
    context: smart.LaunchContext


def authenticate_launch(pending: smart.PendingLaunch, *, code: str,
                        redirect_uri: str) -> AuthenticatedLaunch:
    """Trade the code and check the id_token: who launched, about what. Writes nothing, so
    a staff sign-in can come between this and ``finish_launch``."""
    endpoint = launch_endpoint(pending.endpoint_id)
    try:
        context = _authenticate(endpoint, pending, code=code, redirect_uri=redirect_uri)
    except LaunchFailed as exc:
        exc.endpoint = exc.endpoint or endpoint
        _log_failure(exc.reason, endpoint, exc)
        raise
    return AuthenticatedLaunch(endpoint=endpoint, context=context)


def staff_sso_needed(launch: AuthenticatedLaunch, sso: SsoConfig) -> bool:
    """Whether this EHR user must sign in with the organization before the visit opens:
    the endpoint requires it and they have no link yet. Required but not configured is a
    refusal, never a silent pass."""
    endpoint = launch.endpoint
    if not endpoint.require_staff_sso:
        return False
    if not sso.is_configured:
        log.warning("provider launch failed", extra={"reason": "staff_sso_not_configured",
                                                     "endpoint": endpoint.name})
        raise LaunchFailed("staff_sso_not_configured", 503, endpoint=endpoint,
                           name=endpoint.name)
    return staff_sso.link_for(endpoint, launch.context.fhir_user) is None


def finish_launch(endpoint: EhrEndpoint, context: smart.LaunchContext, *,
                  staff_identity: StaffIdentity | None = None) -> CompletedLaunch:
    """Read the appointment, create the visit if new, and record the LaunchSession; with
    ``staff_identity`` (just signed in) the EHR user's link is created in the same commit,
    so a refused launch leaves no link either."""
    try:
        _record_staff_link(endpoint, context, staff_identity)
        client = FhirClient(endpoint.fhir_base_url, context.access_token)
        resource = _appointment_resource(client, context)
        _check_same_patient(resource, context, endpoint)
        provider_name, identifiers = _practitioner(client, context.fhir_user, resource)
        appointment = upsert_from_fhir(endpoint, resource,
                                       identifiers={context.fhir_user: identifiers})
        participant = ensure_provider(appointment, context.fhir_user, provider_name,
                                      identifiers=identifiers)
        session_id = create_launch_session(
            endpoint=endpoint, appointment=appointment, participant=participant,
            fhir_user=context.fhir_user, patient_ref=context.patient_ref,
            encounter_ref=context.encounter_ref, access_token=context.access_token,
            scope=context.scope, expires_in=context.expires_in)
        # The Practitioner's identifiers (NPI, the EHR's provider id) as the launch read
        # them: what an HL7 booking's AIP-3 names this provider by (provider_for_hl7).
        db.session.add(AuditLog(actor=f"participant:{participant.id}", action=PROVIDER_LAUNCH,
                                target_type="appointment", target_id=str(appointment.id),
                                detail={"endpoint": endpoint.name,
                                        "identifiers": list(identifiers)}))
        db.session.commit()
    except LaunchFailed as exc:
        db.session.rollback()
        exc.endpoint = exc.endpoint or endpoint
        _log_failure(exc.reason, endpoint, exc)
        raise
    except AppointmentUnusable as exc:
        db.session.rollback()
        _log_failure("appointment_unusable", endpoint, exc)
        raise LaunchFailed("appointment_unusable", 400, endpoint=endpoint) from None
    except BaseException:
        db.session.rollback()
        raise
    log.info("provider launch completed",
             extra={"endpoint": endpoint.name, "appointment_id": appointment.id,
                    "participant_id": participant.id})
    return CompletedLaunch(appointment_id=appointment.id, participant_id=participant.id,
                           endpoint=endpoint, session_id=session_id)


def _record_staff_link(endpoint: EhrEndpoint, context: smart.LaunchContext,
                       identity: StaffIdentity | None) -> None:
    """Create the link for a fresh sign-in, or note that an existing one was used."""
    if identity is not None and context.fhir_user:
        try:
            staff_sso.link_identity(endpoint, context.fhir_user, identity)
        except staff_sso.LinkConflict:
            raise LaunchFailed("staff_sso_conflict", 409, endpoint=endpoint) from None
        return
    if endpoint.require_staff_sso:
        link = staff_sso.link_for(endpoint, context.fhir_user)
        if link is not None:
            staff_sso.record_use(link)


def _authenticate(endpoint: EhrEndpoint, pending: smart.PendingLaunch, *, code: str,
                  redirect_uri: str) -> smart.LaunchContext:
    """The shared token exchange and id_token checks, then: it must be a clinician."""
    context = ehr_launch.authenticate(endpoint, pending, code=code, redirect_uri=redirect_uri)
    if not context.fhir_user:
        raise LaunchFailed("missing_fhir_user", 400)
    if not context.fhir_user.startswith("Practitioner/"):
        raise LaunchFailed("not_a_practitioner", 403,
                           resource_type=context.fhir_user.split("/", 1)[0])
    return context


def _appointment_resource(client: FhirClient, context: smart.LaunchContext) -> dict[str, Any]:
    """The Appointment from fhirContext, else through the launch's Encounter."""
    resource = ehr_launch.appointment_in_context(client, context)
    if resource is None:
        raise LaunchFailed("missing_appointment", 400)
    return resource


def _check_same_patient(resource: dict[str, Any], context: smart.LaunchContext,
                        endpoint: EhrEndpoint) -> None:
    """Refuse to open a visit for another patient than the EHR's launch context names."""
    if not context.patient_ref:
        return
    patients = ehr_launch.patients_of(resource, endpoint.fhir_base_url)
    if patients and context.patient_ref not in patients:
        raise LaunchFailed("context_mismatch", 400)


def _practitioner(client: FhirClient, fhir_user: str,
                  appointment: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    """The launching provider's name, read live (the Appointment's display if we may not),
    and their identifiers as ``system|value`` (none if the read failed)."""
    try:
        resource = client.read_reference(fhir_user)
    except (FhirRequestError, EhrUnavailable, UntrustedUrl):
        resource = {}
    name, identifiers = display_name(resource), fhir_identifiers(resource)
    if name:
        return name, identifiers
    for participant in appointment.get("participant") or []:
        actor = participant.get("actor") or {}
        if actor.get("reference") == fhir_user and isinstance(actor.get("display"), str):
            return actor["display"], identifiers
    return None, identifiers


def _log_failure(reason: str, endpoint: EhrEndpoint | None, exc: BaseException) -> None:
    ehr_launch.log_failure("provider launch", reason, endpoint, exc)
