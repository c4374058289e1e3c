"""Every text a person can see exists in English, Spanish and Brazilian Portuguese."""
from __future__ import annotations

from pathlib import Path

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ["ops", "visits", "patient_join", "provider_launch", "staff_sso", "device_test",
           "ehr", "hl7feed", "notifications", "admin", "reports", "sandbox_ehr", "templates"]
METHODS = [("**.py", "python"), ("**.html", "jinja2")]
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "_l": None, "lazy_gettext": None}


def _source_messages() -> set[str]:
    found = set()
    for folder in SOURCES:
        for _file, _line, message, _comments, _context in extract_from_dir(
                ROOT / folder, METHODS, keywords=KEYWORDS):
            found.add(message if isinstance(message, str) else message[0])
    return found


@pytest.mark.parametrize("locale", ["es", "pt_BR"])
def test_every_source_text_is_translated(locale):
    with open(ROOT / "translations" / locale / "LC_MESSAGES" / "messages.po", "rb") as handle:
        catalogue = read_po(handle, locale=locale)
    # A plural's id is (singular, plural); the source scan records the singular.
    translated = {m.id[0] if isinstance(m.id, tuple) else m.id for m in catalogue
                  if m.id and not m.fuzzy
                  and (all(m.string) if isinstance(m.string, tuple) else m.string)}

    untranslated = sorted(_source_messages() - translated)

    assert untranslated == [], f"run `make messages` and translate these in {locale}"
