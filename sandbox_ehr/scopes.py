"""SMART scopes: which the sandbox grants, and what a granted scope lets a token do.

Both v1 (``patient/Observation.read``) and v2 (``patient/Observation.rs``) resource
scopes are understood. ``system/`` scopes belong to SMART Backend Services
(client_credentials) and only there; ``patient/`` and ``user/`` scopes only to the launch.
Scopes the sandbox does not support (v2 query constraints, ``offline_access``: no
refresh tokens here) are left out of the grant, as RFC 6749 allows; the token response
says what was granted.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

CONTEXT_SCOPES = frozenset({"openid", "fhirUser", "profile", "launch", "launch/patient",
                            "launch/encounter", "online_access"})
_RESOURCE_SCOPE = re.compile(
    r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)$")

SUPPORTED_EXAMPLES = ("openid", "fhirUser", "profile", "launch", "launch/patient",
                      "launch/encounter", "online_access", "patient/*.rs", "user/*.rs",
                      "patient/*.read", "user/*.read", "user/AuditEvent.c",
                      "user/Observation.c", "user/Communication.c", "patient/*.cruds",
                      "user/*.cruds", "system/AuditEvent.c", "system/AuditEvent.rs",
                      "system/Observation.c", "system/Observation.rs")
LAUNCH_LEVELS = frozenset({"patient", "user"})
BACKEND_LEVELS = frozenset({"system"})


@dataclass(frozen=True)
class ResourceScope:
    level: str  # "patient", "user" or "system"
    resource_type: str  # a type name or "*"
    permissions: frozenset[str]  # subset of "cruds"


def grant(requested: str) -> list[str]:
    """The requested scopes a launch (authorization code) gets, in request order, without
    duplicates: context scopes and patient/ or user/ resource scopes."""
    granted: list[str] = []
    for scope in requested.split():
        if scope in granted:
            continue
        parsed = parse_resource_scope(scope)
        if scope in CONTEXT_SCOPES or (parsed and parsed.level in LAUNCH_LEVELS):
            granted.append(scope)
    return granted


def grant_system(requested: str) -> list[str]:
    """The requested scopes a backend service (client_credentials) gets: system/ only,
    since there is no user or launch for the others to refer to."""
    granted: list[str] = []
    for scope in requested.split():
        parsed = parse_resource_scope(scope)
        if scope not in granted and parsed and parsed.level in BACKEND_LEVELS:
            granted.append(scope)
    return granted


def parse_resource_scope(scope: str) -> ResourceScope | None:
    match = _RESOURCE_SCOPE.match(scope)
    if not match or not match.group(3):
        return None
    level, resource_type, action = match.groups()
    if action == "read":
        permissions = frozenset("rs")
    elif action == "write":
        permissions = frozenset("cud")
    elif action == "*":
        permissions = frozenset("cruds")
    else:
        permissions = frozenset(action)
    return ResourceScope(level, resource_type, permissions)


def access_levels(scope: str, resource_type: str, permission: str) -> set[str]:
    """Levels ("patient", "user", "system") at which ``scope`` allows ``permission`` on
    the type."""
    levels = set()
    for item in scope.split():
        parsed = parse_resource_scope(item)
        if parsed and parsed.resource_type in ("*", resource_type) \
                and permission in parsed.permissions:
            levels.add(parsed.level)
    return levels
