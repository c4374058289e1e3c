"""Keys that read as words: a table value such as ``not_sent`` stays that key in CSV, JSON
and the page's ``data-key`` hooks, and shows as its translated label in the page's cells and
chart bars (the framework writes those with ``str()``)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from markupsafe import Markup, escape


class Label(str):
    """``key`` as a string (equality, CSV, JSON, HTML attributes); ``str()`` gives the
    label, translated when the page renders it."""

    label: Any

    def __new__(cls, key: str, label: Any) -> Self:
        made = super().__new__(cls, key)
        made.label = label
        return made

    def __str__(self) -> str:
        return str(self.label)

    def __html__(self) -> Markup:
        return escape(str.__str__(self))


def labelled(key: str | None, labels: Mapping[str, Any]) -> str | None:
    """``key`` as a Label when ``labels`` names it, else unchanged."""
    if key is None or key not in labels:
        return key
    return Label(key, labels[key])
