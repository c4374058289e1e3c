"""Names shown to providers come out readable whatever shape the EHR sends."""
from __future__ import annotations

import pytest

from ehr.names import display_name


@pytest.mark.parametrize(("resource", "expected"), [
    ({"name": [{"text": "Ada Testwell"}]}, "Ada Testwell"),
    ({"name": [{"given": ["Ada", "B."], "family": "Testwell"}]}, "Ada B. Testwell"),
    ({"name": [{"use": "old", "family": "Old"}, {"use": "official", "given": ["New"],
                                                  "family": "Name"}]}, "New Name"),
    ({"name": [{"prefix": ["Dr."], "given": ["Quinn"], "family": "Example"}]}, "Dr. Quinn Example"),
    ({"name": []}, None),
    ({}, None),
])
def test_display_name(resource, expected):
    assert display_name(resource) == expected
