"""The device-test result as a FHIR R4 Observation for the EHR.

One component per check carries its grade (pass/warn/fail/skipped); each measurement is
a component of its own with a UCUM quantity, since a component holds one value. Codes are
ours (``urn:virtual-visits:...``): there is no LOINC code for "video visit device test".
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from ehr.auditevents import EVENT_SYSTEM

CODE_SYSTEM = "urn:virtual-visits:device-test"
GRADE_SYSTEM = "urn:virtual-visits:device-test-grade"
UCUM = "http://unitsofmeasure.org"

# (check, measurement) -> (display, UCUM code); "1" is UCUM's unity for a score.
QUANTITIES: dict[tuple[str, str], tuple[str, str]] = {
    ("microphone", "peak_dbfs"): ("Microphone peak level", "dB"),
    ("microphone", "clipping_pct"): ("Microphone clipping", "%"),
    ("camera", "width"): ("Camera width", "{pixels}"),
    ("camera", "height"): ("Camera height", "{pixels}"),
    ("camera", "fps"): ("Camera frame rate", "/s"),
    ("connection", "rtt_ms"): ("Round trip to the server", "ms"),
    ("connection", "download_kbps"): ("Download throughput", "kbit/s"),
    ("connection", "upload_kbps"): ("Upload throughput", "kbit/s"),
    ("test_call", "rtt_ms"): ("Test call round-trip time", "ms"),
    ("test_call", "jitter_ms"): ("Test call jitter", "ms"),
    ("test_call", "packet_loss_pct"): ("Test call packet loss", "%"),
    ("test_call", "bitrate_in_kbps"): ("Test call video bitrate received", "kbit/s"),
    ("test_call", "bitrate_out_kbps"): ("Test call bitrate sent", "kbit/s"),
    ("test_call", "mos"): ("Test call estimated MOS", "1"),
}
CHECK_DISPLAY = {"speaker": "Speaker", "microphone": "Microphone", "camera": "Camera",
                 "connection": "Connection", "test_call": "Test call"}


def _grade(status: str) -> dict[str, Any]:
    return {"coding": [{"system": GRADE_SYSTEM, "code": status}], "text": status}


def build(*, identifier: str, overall: str, checks: dict[str, dict[str, Any]],
          effective: datetime, patient_reference: str | None,
          appointment_reference: str | None) -> dict[str, Any]:
    """The Observation JSON; ``identifier`` goes under EVENT_SYSTEM for If-None-Exist."""
    components: list[dict[str, Any]] = []
    for name, display in CHECK_DISPLAY.items():
        check = checks.get(name) or {"status": "skipped"}
        components.append({"code": {"coding": [{"system": CODE_SYSTEM, "code": name,
                                                "display": display}], "text": display},
                           "valueCodeableConcept": _grade(check["status"])})
        for (owner, key), (label, unit) in QUANTITIES.items():
            value = check.get(key)
            if owner != name or value is None:
                continue
            components.append({
                "code": {"coding": [{"system": CODE_SYSTEM, "code": f"{name}.{key}",
                                     "display": label}], "text": label},
                "valueQuantity": {"value": round(float(value), 2), "unit": unit,
                                  "system": UCUM, "code": unit}})
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": EVENT_SYSTEM, "value": identifier}],
        "status": "final",
        "category": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
            "code": "survey", "display": "Survey"}]}],
        "code": {"coding": [{"system": CODE_SYSTEM, "code": "device-test",
                             "display": "Video visit device test"}],
                 "text": "Video visit device test"},
        "effectiveDateTime": effective.isoformat(),
        "issued": effective.isoformat(),
        "valueCodeableConcept": _grade(overall),
        "component": components,
    }
    if patient_reference:
        resource["subject"] = {"reference": patient_reference}
    if appointment_reference:
        resource["focus"] = [{"reference": appointment_reference}]
    return resource
