"""Lookups every admin page shares."""
from __future__ import annotations

from flask import abort

from ehr import services
from ehr.models import EhrEndpoint


def endpoint_or_404(name: str) -> EhrEndpoint:
    """The endpoint an admin URL names; a plain 404 page when there is none."""
    endpoint = services.get_endpoint(name)
    if endpoint is None:
        abort(404)
    return endpoint
