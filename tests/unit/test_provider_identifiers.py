"""Matching an HL7 AIP-3 id to the identifiers of a launched provider's FHIR Practitioner."""
from __future__ import annotations

import pytest

from visits.appointments import fhir_identifiers, identifier_matches

PRACTITIONER = {"resourceType": "Practitioner", "id": "prac-1", "identifier": [
    {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1999999901"},
    {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.1", "value": "E1234"},
    {"value": "LOCAL7"}, {"system": "x"}, "not an identifier"]}


def test_fhir_identifiers_are_system_bar_value():
    assert fhir_identifiers(PRACTITIONER) == (
        "http://hl7.org/fhir/sid/us-npi|1999999901",
        "urn:oid:1.2.840.114350.1.13.0.1.7.5.737384.1|E1234", "LOCAL7")
    assert fhir_identifiers({}) == ()


@pytest.mark.parametrize("hl7_id, matches", [
    ("http://hl7.org/fhir/sid/us-npi|1999999901", True),
    ("NPI|1999999901", True),  # NPI as XCN-9, as the sandbox and many feeds send it
    ("2.16.840.1.113883.4.6|1999999901", True),
    ("1.2.840.114350.1.13.0.1.7.5.737384.1|E1234", True),  # an OID without urn:oid:
    ("1999999901", True),  # no authority: the value alone
    ("LOCAL7", True),
    ("NPI|1999999902", False),
    ("EPIC|1999999901", False),  # another authority's id that happens to look alike
    ("", False),
])
def test_an_hl7_id_matches_the_same_system_and_value(hl7_id, matches):
    assert identifier_matches(hl7_id, fhir_identifiers(PRACTITIONER)) is matches
