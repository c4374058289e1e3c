"""Structural validation of incoming resources with the fhir.resources R4B models.

The app's write-backs are checked as strictly as a real EHR would: unknown elements,
wrong types and missing required elements are rejected with an OperationOutcome that
names the element, so a bad write-back fails in tests rather than in production.
"""
from __future__ import annotations

import importlib
import json
from typing import Any

from pydantic import ValidationError

from sandbox_ehr.errors import FhirError

_MODULES = {"AuditEvent": "auditevent", "Observation": "observation",
            "Communication": "communication"}


def parse_and_validate(resource_type: str, raw: bytes) -> dict[str, Any]:
    """The request body as a resource of ``resource_type``, or FhirError (400)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting: Recursion
        raise FhirError(400, "structure", f"Request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise FhirError(400, "structure", "Request body must be a JSON object (a FHIR resource)")
    if "resourceType" not in body:
        raise FhirError(400, "required", "resourceType is required")
    if body["resourceType"] != resource_type:
        raise FhirError(400, "invalid", f"resourceType {body['resourceType']!r} does not match "
                                        f"the {resource_type} endpoint")
    model = _model(resource_type)
    try:
        model.model_validate(body)
    except ValidationError as exc:
        issues = [_issue(error) for error in exc.errors()]
        raise FhirError(400, issues[0]["code"], issues[0]["diagnostics"], issues=issues) from None
    return body


def _model(resource_type: str) -> Any:
    module = importlib.import_module(f"fhir.resources.R4B.{_MODULES[resource_type]}")
    return getattr(module, resource_type)


def _issue(error: dict[str, Any]) -> dict[str, Any]:
    kind = str(error.get("type", ""))
    if kind == "missing" or kind.endswith(".missing"):
        code = "required"
    elif kind == "extra_forbidden" or kind.endswith("_type") or kind.endswith("_parsing"):
        code = "structure"
    else:
        code = "invalid"
    path = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__")
    return {"severity": "error", "code": code,
            "diagnostics": f"{path or 'resource'}: {error.get('msg', 'invalid')}",
            **({"expression": [path]} if path else {})}
