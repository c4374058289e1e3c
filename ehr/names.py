"""Display names from FHIR HumanName, for showing only: the app never stores a patient's."""
from __future__ import annotations

from typing import Any

_PREFERRED_USES = ("usual", "official", None, "nickname")


def display_name(resource: dict[str, Any]) -> str | None:
    """'Ada Testwell' from a Patient or Practitioner; the ``text`` when the EHR gives one."""
    names = [n for n in resource.get("name") or [] if isinstance(n, dict)]
    if not names:
        return None
    names.sort(key=lambda n: _PREFERRED_USES.index(n.get("use"))
               if n.get("use") in _PREFERRED_USES else len(_PREFERRED_USES))
    name = names[0]
    if name.get("text"):
        return str(name["text"]).strip() or None
    parts = [*(name.get("prefix") or []), *(name.get("given") or []), name.get("family") or ""]
    text = " ".join(str(p).strip() for p in parts if p and str(p).strip())
    return text or None
