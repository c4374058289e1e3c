"""FHIR search parameters the sandbox understands, evaluated in Python.

The sandbox holds a few dozen resources, so loading a type and filtering is simpler
and easier to get right than translating FHIR search into SQL. Semantics follow the
R4 spec where it matters to the app: comma means OR, a repeated parameter means AND,
references match ``Type/id``, a bare id or an absolute URL on our base, and dates
compare by the precision given (``date=2024-05-01`` is that whole day in clinic time).
Unknown parameters are ignored (the spec's lenient default); unknown modifiers are not.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable
from zoneinfo import ZoneInfo

from flask import current_app

from sandbox_ehr.common import fhir_base
from sandbox_ehr.errors import FhirError

Resource = dict[str, Any]
RESULT_PARAMS = frozenset({"_count", "_offset", "_format", "_pretty", "_summary", "_elements",
                           "_sort", "_include", "_revinclude", "_total"})


@dataclass(frozen=True)
class Param:
    kind: str  # token | reference | date | string | id
    extract: Callable[[Resource], list[Any]]
    targets: tuple[str, ...] = ()  # resource types a reference param may point at


# --- extractors ---------------------------------------------------------------------------

def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _identifiers(resource: Resource) -> list[tuple[str | None, str | None]]:
    found = [(i.get("system"), i.get("value")) for i in _as_list(resource.get("identifier"))]
    # AuditEvent has no identifier element; its business id rides on entity.what.identifier.
    for entity in _as_list(resource.get("entity")):
        identifier = (entity.get("what") or {}).get("identifier")
        if identifier:
            found.append((identifier.get("system"), identifier.get("value")))
    return found


def _codings(*paths: str) -> Callable[[Resource], list[tuple[str | None, str | None]]]:
    def extract(resource: Resource) -> list[tuple[str | None, str | None]]:
        values = []
        for path in paths:
            for concept in _walk(resource, path):
                if isinstance(concept, dict) and "coding" in concept:
                    values += [(c.get("system"), c.get("code")) for c in concept["coding"]]
                elif isinstance(concept, dict) and "code" in concept:  # a bare Coding
                    values.append((concept.get("system"), concept.get("code")))
        return values
    return extract


def _code(path: str) -> Callable[[Resource], list[tuple[None, str]]]:
    return lambda resource: [(None, value) for value in _walk(resource, path)
                             if isinstance(value, str)]


def _references(*paths: str) -> Callable[[Resource], list[str]]:
    def extract(resource: Resource) -> list[str]:
        return [ref["reference"] for path in paths for ref in _walk(resource, path)
                if isinstance(ref, dict) and isinstance(ref.get("reference"), str)]
    return extract


def _dates(*paths: str) -> Callable[[Resource], list[str]]:
    return lambda resource: [value for path in paths for value in _walk(resource, path)
                             if isinstance(value, str)]


def _names(*parts: str) -> Callable[[Resource], list[str]]:
    def extract(resource: Resource) -> list[str]:
        values = []
        for name in _as_list(resource.get("name")):
            if isinstance(name, str):  # Location.name is a plain string
                values.append(name)
                continue
            for part in parts:
                values += [v for v in _as_list(name.get(part)) if isinstance(v, str)]
        return values
    return extract


def _walk(value: Any, path: str) -> Iterable[Any]:
    """Values at a dotted path, stepping into every list on the way."""
    items = [value]
    for step in path.split("."):
        nxt = []
        for item in items:
            for element in _as_list(item):
                if isinstance(element, dict) and step in element:
                    nxt += _as_list(element[step])
        items = nxt
    return items


# --- the parameters per type -------------------------------------------------------------

_COMMON = {
    "_id": Param("id", lambda r: [r.get("id")]),
    "identifier": Param("token", _identifiers),
}
_PERSON = {"name": Param("string", _names("text", "family", "given", "prefix", "suffix")),
           "family": Param("string", _names("family")),
           "given": Param("string", _names("given"))}

PARAMS: dict[str, dict[str, Param]] = {
    "Patient": {**_COMMON, **_PERSON},
    "Practitioner": {**_COMMON, **_PERSON},
    "Location": {**_COMMON, "name": Param("string", _names())},
    "Appointment": {
        **_COMMON,
        "patient": Param("reference", _references("participant.actor"), ("Patient",)),
        "practitioner": Param("reference", _references("participant.actor"), ("Practitioner",)),
        "location": Param("reference", _references("participant.actor"), ("Location",)),
        "actor": Param("reference", _references("participant.actor"),
                       ("Patient", "Practitioner", "Location")),
        "date": Param("date", _dates("start")),
        "status": Param("token", _code("status")),
        "service-type": Param("token", _codings("serviceType")),
        "appointment-type": Param("token", _codings("appointmentType")),
    },
    "Encounter": {
        **_COMMON,
        "patient": Param("reference", _references("subject"), ("Patient",)),
        "subject": Param("reference", _references("subject"), ("Patient",)),
        "practitioner": Param("reference", _references("participant.individual"),
                              ("Practitioner",)),
        "participant": Param("reference", _references("participant.individual"),
                             ("Practitioner",)),
        "appointment": Param("reference", _references("appointment"), ("Appointment",)),
        "location": Param("reference", _references("location.location"), ("Location",)),
        "date": Param("date", _dates("period.start")),
        "status": Param("token", _code("status")),
        "class": Param("token", _codings("class")),
    },
    "Observation": {
        **_COMMON,
        "patient": Param("reference", _references("subject"), ("Patient",)),
        "subject": Param("reference", _references("subject"), ("Patient",)),
        "focus": Param("reference", _references("focus"), ("Appointment", "Encounter")),
        "encounter": Param("reference", _references("encounter"), ("Encounter",)),
        "code": Param("token", _codings("code")),
        "category": Param("token", _codings("category")),
        "status": Param("token", _code("status")),
        "date": Param("date", _dates("effectiveDateTime", "effectivePeriod.start",
                                     "effectiveInstant", "issued")),
    },
    "Communication": {
        **_COMMON,
        "patient": Param("reference", _references("subject"), ("Patient",)),
        "subject": Param("reference", _references("subject"), ("Patient",)),
        "encounter": Param("reference", _references("encounter"), ("Encounter",)),
        "based-on": Param("reference", _references("basedOn"), ("Appointment",)),
        "status": Param("token", _code("status")),
        "category": Param("token", _codings("category")),
        "sent": Param("date", _dates("sent")),
    },
    "AuditEvent": {
        **_COMMON,
        "entity": Param("reference", _references("entity.what"),
                        ("Appointment", "Encounter", "Patient")),
        "agent": Param("reference", _references("agent.who"), ("Practitioner", "Patient")),
        "patient": Param("reference", _references("entity.what", "agent.who"), ("Patient",)),
        "type": Param("token", _codings("type")),
        "subtype": Param("token", _codings("subtype")),
        "action": Param("token", _code("action")),
        "outcome": Param("token", _code("outcome")),
        "date": Param("date", _dates("recorded")),
    },
}


# --- evaluation ----------------------------------------------------------------------------

def matches(resource_type: str, resource: Resource, params: dict[str, list[str]]) -> bool:
    """Whether ``resource`` satisfies every (supported) parameter in ``params``."""
    for raw_name, values in params.items():
        name, _, modifier = raw_name.partition(":")
        definition = PARAMS[resource_type].get(name)
        if definition is None or name in RESULT_PARAMS:
            continue
        _check_modifier(definition, raw_name, modifier)
        extracted = definition.extract(resource)
        for value in values:  # repeated parameter: AND
            alternatives = [v for v in value.split(",") if v != ""]  # comma: OR
            if not alternatives:
                continue
            if not any(_match_one(definition, modifier, extracted, alt) for alt in alternatives):
                return False
    return True


def used_params(resource_type: str, params: dict[str, list[str]]) -> dict[str, list[str]]:
    """The parameters that took part, for the Bundle's self link."""
    return {name: values for name, values in params.items()
            if name.partition(":")[0] in PARAMS[resource_type]}


def _check_modifier(definition: Param, raw_name: str, modifier: str) -> None:
    allowed = {"string": {"", "exact", "contains"}}.get(definition.kind, {""})
    if modifier not in allowed:
        raise FhirError(400, "not-supported", f"Search modifier not supported: {raw_name}")


def _match_one(definition: Param, modifier: str, extracted: list[Any], value: str) -> bool:
    kind = definition.kind
    if kind == "id":
        return value in extracted
    if kind == "token":
        return _token_matches(extracted, value)
    if kind == "string":
        return _string_matches(extracted, value, modifier)
    if kind == "reference":
        return _reference_matches(extracted, value, definition.targets)
    if kind == "date":
        return _date_matches(extracted, value)
    raise AssertionError(kind)


def _token_matches(extracted: list[tuple[str | None, str | None]], value: str) -> bool:
    if "|" in value:
        system, _, code = value.partition("|")
        if system == "":  # "|code": only values without a system
            return any(s is None and c == code for s, c in extracted)
        if code == "":  # "system|": any value in that system
            return any(s == system for s, _c in extracted)
        return any(s == system and c == code for s, c in extracted)
    return any(c == value for _s, c in extracted)


def _string_matches(extracted: list[str], value: str, modifier: str) -> bool:
    if modifier == "exact":
        return value in extracted
    needle = value.casefold()
    if modifier == "contains":
        return any(needle in item.casefold() for item in extracted)
    return any(item.casefold().startswith(needle) for item in extracted)


def normalise_reference(reference: str) -> str:
    """``Type/id`` for a relative reference or an absolute one on our own FHIR base."""
    base = fhir_base() + "/"
    return reference[len(base):] if reference.startswith(base) else reference


def _reference_matches(extracted: list[str], value: str, targets: tuple[str, ...]) -> bool:
    wanted = normalise_reference(value)
    references = [normalise_reference(r) for r in extracted]
    if "/" in wanted:
        return wanted in references
    return any(f"{target}/{wanted}" in references for target in targets)


_DATE_PREFIXES = frozenset({"eq", "ne", "ge", "le", "gt", "lt", "sa", "eb"})
_PARTIAL_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?$")


def _date_matches(extracted: list[str], value: str) -> bool:
    prefix, text = (value[:2], value[2:]) if value[:2].isalpha() else ("eq", value)
    if prefix not in _DATE_PREFIXES:
        raise FhirError(400, "not-supported", f"Date prefix not supported: {prefix}")
    try:
        low, high = date_range(text)
    except ValueError:
        raise FhirError(400, "invalid", f"Not a FHIR date or dateTime: {text!r}") from None
    for item in extracted:
        try:
            instant = _parse_instant(item)
        except ValueError:
            continue
        if _compare(prefix, instant, low, high):
            return True
    return False


def _compare(prefix: str, instant: datetime, low: datetime, high: datetime) -> bool:
    """Resource dates are points in time, so ``sa`` is ``gt`` and ``eb`` is ``lt``."""
    if prefix == "eq":
        return low <= instant < high
    if prefix == "ne":
        return not low <= instant < high
    if prefix == "ge":
        return instant >= low
    if prefix == "le":
        return instant < high
    if prefix in ("gt", "sa"):
        return instant >= high
    return instant < low  # lt, eb


def date_range(text: str) -> tuple[datetime, datetime]:
    """The [low, high) instants a FHIR date or dateTime value stands for; ValueError if bad."""
    zone = ZoneInfo(current_app.config["SANDBOX_TIMEZONE"])
    text = text.replace(" ", "+")  # an unencoded "+" in an offset arrives as a space
    match = _PARTIAL_DATE.match(text)
    if match:
        year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
        low = datetime(year, month, day, tzinfo=zone)
        if match[3]:
            high = datetime.combine(low.date() + timedelta(days=1), low.timetz())
        elif match[2]:
            high = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=zone)
        else:
            high = datetime(year + 1, 1, 1, tzinfo=zone)
        return low, high
    match = _DATETIME.match(text)
    if not match:
        raise ValueError(f"not a FHIR date or dateTime: {text!r}")
    low = _parse_instant(text)
    step = timedelta(seconds=1) if match[1] else timedelta(minutes=1)
    return low, low + step


def _parse_instant(text: str) -> datetime:
    """A dateTime as an aware datetime; one without an offset is in clinic time."""
    if "T" not in text:
        low, _high = date_range(text)
        return low
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=ZoneInfo(current_app.config["SANDBOX_TIMEZONE"]))
    return parsed
