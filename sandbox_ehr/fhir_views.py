"""FHIR R4 REST for the sandbox: CapabilityStatement, read, search, create.

Every failure is an OperationOutcome in ``application/fhir+json``, including unknown
types (404) and unsupported methods (405), because the app's FHIR client parses them.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from flask import Response, g, request

from sandbox_ehr import bp, scopes, search, store, validation
from sandbox_ehr.common import authorize_url, fhir_base, token_url
from sandbox_ehr.errors import FhirError
from sandbox_ehr.smart import AccessGrant, check_access_token

FHIR_JSON = "application/fhir+json"
_ALL_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
_MAX_COUNT = 100


def fhir_response(body: dict[str, Any], status: int = 200,
                  headers: dict[str, str] | None = None) -> Response:
    response = Response(json.dumps(body), status=status, headers=headers or {},
                        content_type=f"{FHIR_JSON}; charset=utf-8")
    return response


def operation_outcome(code: str, diagnostics: str, issues: list[dict] | None = None) -> dict:
    return {"resourceType": "OperationOutcome", "issue": issues or [
        {"severity": "error", "code": code, "diagnostics": diagnostics}]}


@bp.errorhandler(FhirError)
def _fhir_error(error: FhirError):
    return fhir_response(operation_outcome(error.code, error.diagnostics, error.issues),
                         error.status, error.headers)


@bp.get("/fhir/metadata")
def capability_statement():
    """The CapabilityStatement; public, and carries the SMART OAuth endpoints."""
    return fhir_response(_capability_statement())


@bp.route("/fhir/<resource_type>", methods=_ALL_METHODS)
def type_endpoint(resource_type: str):
    """Search (GET) or create (POST) on a resource type."""
    _require_type(resource_type)
    if request.method == "GET":
        return _search(resource_type)
    if request.method == "POST" and resource_type in store.CREATE_TYPES:
        return _create(resource_type)
    raise _not_allowed(resource_type, "GET, POST" if resource_type in store.CREATE_TYPES
                       else "GET")


@bp.route("/fhir/<resource_type>/<resource_id>", methods=_ALL_METHODS)
def instance_endpoint(resource_type: str, resource_id: str):
    """Read one resource."""
    _require_type(resource_type)
    if request.method != "GET":
        raise _not_allowed(resource_type, "GET")
    grant = _authorize(resource_type, "r")
    resource = store.read(resource_type, resource_id)
    if resource is None:
        raise FhirError(404, "not-found", f"{resource_type}/{resource_id} is not known")
    if not _visible(grant, resource_type, resource):
        raise FhirError(403, "forbidden", "Outside the patient in this token's launch context")
    return fhir_response(resource, headers=_version_headers(resource))


@bp.route("/fhir/<path:rest>", methods=_ALL_METHODS)
def unknown_endpoint(rest: str):
    """Anything else under the FHIR base, answered in FHIR rather than as an HTML page."""
    raise FhirError(404, "not-found", f"Not supported by the sandbox: {request.method} {rest}")


def _require_type(resource_type: str) -> None:
    if resource_type not in store.READ_TYPES:
        raise FhirError(404, "not-supported", f"Resource type {resource_type!r} is not served "
                                              "by the sandbox")


def _not_allowed(resource_type: str, allowed: str) -> FhirError:
    return FhirError(405, "not-supported",
                     f"{request.method} is not supported on {resource_type} here",
                     headers={"Allow": allowed})


def _authorize(resource_type: str, permission: str) -> AccessGrant:
    """The caller's grant, if its bearer token allows ``permission`` on this type."""
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    grant = check_access_token(token)
    if grant is None:
        raise FhirError(401, "login", "A valid Bearer access token is required",
                        headers={"WWW-Authenticate": 'Bearer realm="sandbox-fhir", '
                                 'error="invalid_token"' if token else
                                 'Bearer realm="sandbox-fhir"'})
    levels = scopes.access_levels(grant.scope, resource_type, permission)
    if not levels:
        raise FhirError(403, "forbidden", f"The token's scopes do not allow '{permission}' on "
                                          f"{resource_type}",
                        headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})
    if levels == {"patient"} and not grant.patient:
        raise FhirError(403, "forbidden", "patient/ scopes need a patient in the launch context")
    g.sandbox_patient_only = levels == {"patient"}
    return grant


def _visible(grant: AccessGrant, resource_type: str, resource: dict[str, Any]) -> bool:
    """patient/ scopes see only that patient's compartment (practitioners and places too)."""
    if not g.get("sandbox_patient_only"):
        return True
    if resource_type in ("Practitioner", "Location"):
        return True
    if resource_type == "Patient":
        return resource.get("id") == grant.patient
    return _references(resource, f"Patient/{grant.patient}")


def _references(value: Any, wanted: str) -> bool:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and search.normalise_reference(reference) == wanted:
            return True
        return any(_references(v, wanted) for v in value.values())
    if isinstance(value, list):
        return any(_references(v, wanted) for v in value)
    return False


def _search(resource_type: str):
    grant = _authorize(resource_type, "s")
    params = {name: request.args.getlist(name) for name in request.args}
    matches = [r for r in store.find(resource_type, params) if _visible(grant, resource_type, r)]
    count = _int_param("_count", default=_MAX_COUNT, low=0, high=_MAX_COUNT)
    offset = _int_param("_offset", default=0, low=0, high=None)
    page = matches[offset:offset + count]
    used = search.used_params(resource_type, params)
    links = [{"relation": "self", "url": _search_url(resource_type, used, count, offset)}]
    if offset + count < len(matches):
        links.append({"relation": "next",
                      "url": _search_url(resource_type, used, count, offset + count)})
    bundle = {
        "resourceType": "Bundle", "type": "searchset", "total": len(matches), "link": links,
        "entry": [{"fullUrl": f"{fhir_base()}/{resource_type}/{r['id']}", "resource": r,
                   "search": {"mode": "match"}} for r in page],
    }
    return fhir_response(bundle)


def _int_param(name: str, *, default: int, low: int, high: int | None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise FhirError(400, "invalid", f"{name} must be an integer") from None
    if value < low:
        raise FhirError(400, "invalid", f"{name} must be at least {low}")
    return min(value, high) if high is not None else value


def _search_url(resource_type: str, used: dict[str, list[str]], count: int, offset: int) -> str:
    query = [(name, value) for name, values in used.items() for value in values]
    query += [("_count", str(count)), ("_offset", str(offset))]
    return f"{fhir_base()}/{resource_type}?{urlencode(query)}"


def _create(resource_type: str):
    grant = _authorize(resource_type, "c")
    mimetype = request.mimetype
    if mimetype not in (FHIR_JSON, "application/json"):
        raise FhirError(415, "not-supported", "Send the resource as application/fhir+json")
    body = validation.parse_and_validate(resource_type, request.get_data())
    if not _visible(grant, resource_type, body):
        raise FhirError(403, "forbidden", "patient/ scopes may only write about the patient "
                                          "in the launch context")
    resource, created = store.create(resource_type, body,
                                     if_none_exist=request.headers.get("If-None-Exist"))
    headers = _version_headers(resource)
    headers["Location"] = (f"{fhir_base()}/{resource_type}/{resource['id']}"
                           f"/_history/{resource['meta']['versionId']}")
    if request.headers.get("Prefer", "").replace(" ", "") == "return=minimal":
        return Response(status=201 if created else 200, headers=headers)
    return fhir_response(resource, 201 if created else 200, headers)


def _version_headers(resource: dict[str, Any]) -> dict[str, str]:
    meta = resource.get("meta", {})
    return {"ETag": f'W/"{meta.get("versionId", "1")}"'}


def _capability_statement() -> dict[str, Any]:
    resources = []
    for resource_type in sorted(store.READ_TYPES):
        interactions = [{"code": "read"}, {"code": "search-type"}]
        if resource_type in store.CREATE_TYPES:
            interactions.append({"code": "create"})
        entry: dict[str, Any] = {
            "type": resource_type, "interaction": interactions,
            "searchParam": [{"name": name, "type": param.kind if param.kind != "id" else "token"}
                            for name, param in search.PARAMS[resource_type].items()],
        }
        if resource_type in store.CREATE_TYPES:
            entry["conditionalCreate"] = True
        resources.append(entry)
    return {
        "resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
        "date": "2025-01-01", "fhirVersion": "4.0.1", "format": ["json"],
        "software": {"name": "Virtual Visits sandbox EHR"},
        "implementation": {"description": "Sandbox EHR for demos and tests",
                           "url": fhir_base()},
        "rest": [{
            "mode": "server",
            "security": {
                "cors": False,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"}]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "authorize", "valueUri": authorize_url()},
                                  {"url": "token", "valueUri": token_url()}],
                }],
            },
            "resource": resources,
        }],
    }
