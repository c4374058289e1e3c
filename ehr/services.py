"""EHR endpoint bookkeeping shared by the CLI, the admin portal and the demo."""
from __future__ import annotations

from extensions import db
from ehr.models import EhrEndpoint, Environment
from visits.models import utcnow


def ensure_endpoint(name: str, fhir_base_url: str, *, client_id: str, scopes: str,
                    environment: str = Environment.TEST, approved_by: str | None = None,
                    site_timezone: str | None = None) -> EhrEndpoint:
    """Create or update the endpoint called ``name``; approve it when ``approved_by`` is given.

    Idempotent, so ``flask demo`` can run every time the demo starts."""
    endpoint = db.session.execute(
        db.select(EhrEndpoint).filter_by(name=name)).scalar_one_or_none()
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
    if approved_by and not endpoint.is_approved:
        endpoint.approved_by, endpoint.approved_at = approved_by, utcnow()
    db.session.commit()
    return endpoint
