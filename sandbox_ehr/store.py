"""The sandbox's FHIR resource store: read, search, create, and upsert for seeding.

One row per resource holding its current JSON. Server-owned fields (``id``,
``meta.versionId``, ``meta.lastUpdated``) are set here, never taken from a client.
"""
from __future__ import annotations

import threading
import uuid
from typing import Any
from urllib.parse import parse_qs

from extensions import db
from sandbox_ehr import search
from sandbox_ehr.common import utcnow
from sandbox_ehr.errors import FhirError
from sandbox_ehr.models import SandboxResource

Resource = dict[str, Any]
READ_TYPES = frozenset(search.PARAMS)
CREATE_TYPES = frozenset({"AuditEvent", "Observation", "Communication"})

# Conditional create is check-then-insert; one writer at a time keeps it from
# duplicating under the threaded test server. (One process only: the sandbox is a demo.)
_create_lock = threading.Lock()


def read(resource_type: str, resource_id: str) -> Resource | None:
    row = db.session.get(SandboxResource, (resource_type, resource_id))
    return dict(row.body) if row else None


def find(resource_type: str, params: dict[str, list[str]]) -> list[Resource]:
    """Every match, in a stable order (appointments by start time, others by age)."""
    rows = db.session.execute(
        db.select(SandboxResource).where(SandboxResource.type == resource_type)
        .order_by(SandboxResource.last_updated, SandboxResource.id)
    ).scalars().all()
    found = [dict(row.body) for row in rows
             if search.matches(resource_type, row.body, params)]
    if resource_type == "Appointment":
        found.sort(key=lambda r: (r.get("start", ""), r.get("id", "")))
    return found


def create(resource_type: str, body: Resource, *, if_none_exist: str | None = None
           ) -> tuple[Resource, bool]:
    """Store a new resource; with ``if_none_exist`` return an existing match instead.

    Returns ``(resource, created)``. More than one existing match is a 412, per the spec.
    """
    with _create_lock:
        if if_none_exist:
            existing = find(resource_type, _condition(resource_type, if_none_exist))
            if len(existing) > 1:
                raise FhirError(412, "duplicate", "If-None-Exist matches more than one resource")
            if existing:
                return existing[0], False
        resource_id = uuid.uuid4().hex
        stored = _stamp(resource_type, resource_id, body, version=1)
        db.session.add(SandboxResource(type=resource_type, id=resource_id, version=1,
                                       last_updated=utcnow(), body=stored))
        db.session.commit()
        return stored, True


def _condition(resource_type: str, header: str) -> dict[str, list[str]]:
    query = header.strip()
    if query.startswith(resource_type + "?"):
        query = query[len(resource_type) + 1:]
    query = query.lstrip("?")
    params = parse_qs(query, keep_blank_values=False)
    if not search.used_params(resource_type, params):
        raise FhirError(400, "invalid", "If-None-Exist needs at least one supported search "
                                        f"parameter for {resource_type}, e.g. identifier=system|value")
    return params


def upsert(resource_type: str, resource_id: str, body: Resource) -> tuple[Resource, bool]:
    """Create or replace with a fixed id; a new version only when the content changed."""
    return upsert_many([(resource_type, resource_id, body)])[0]


def upsert_many(items: list[tuple[str, str, Resource]]) -> list[tuple[Resource, bool]]:
    """``upsert`` for many resources with one read (seeding upserts the whole clinic).

    The caller commits.
    """
    keys = {(resource_type, resource_id) for resource_type, resource_id, _body in items}
    existing = {(row.type, row.id): row for row in db.session.execute(
        db.select(SandboxResource).where(
            db.tuple_(SandboxResource.type, SandboxResource.id).in_(list(keys)))
    ).scalars()}
    results = []
    for resource_type, resource_id, body in items:
        row = existing.get((resource_type, resource_id))
        if row is not None and _content(row.body) == _content(
                _stamp(resource_type, resource_id, body, version=row.version)):
            results.append((dict(row.body), False))
            continue
        version = row.version + 1 if row else 1
        stored = _stamp(resource_type, resource_id, body, version=version)
        if row is None:
            row = SandboxResource(type=resource_type, id=resource_id)
            db.session.add(row)
            existing[(resource_type, resource_id)] = row
        row.version, row.last_updated, row.body = version, utcnow(), stored
        results.append((stored, True))
    return results


def _stamp(resource_type: str, resource_id: str, body: Resource, *, version: int) -> Resource:
    meta = {k: v for k, v in (body.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    meta.update(versionId=str(version),
                lastUpdated=utcnow().isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    stamped = {"resourceType": resource_type, "id": resource_id, "meta": meta}
    stamped.update({k: v for k, v in body.items() if k not in ("resourceType", "id", "meta")})
    return stamped


def _content(body: Resource) -> Resource:
    """The resource without server bookkeeping, to decide whether anything changed."""
    meta = {k: v for k, v in (body.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    return {**body, "meta": meta}
