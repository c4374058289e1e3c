"""Which site is about to show a page in a frame, as far as the browser tells us.

CSP ``frame-ancestors`` is checked by the browser only when our response arrives: by then
a launch has run, and the clinician sees an empty frame. Browsers with Fetch Metadata
(Chromium since 80, Firefox since 90, Safari since 16.4) say up front that a request
loads a frame (``Sec-Fetch-Dest: iframe``) and whether whoever started it is another
origin (``Sec-Fetch-Site``); the ``Referer`` names that page's origin. That is enough to
refuse, with a page, a launch the browser would not show anyway.

What the headers cannot tell:

- ``Referer`` names the page that started the navigation, normally the EHR page holding
  the frame; a launcher page on a third origin in between, or a frame nested in another
  site's frame, are not seen (``frame-ancestors`` checks every ancestor).
- A page with ``Referrer-Policy: no-referrer`` sends none. A frame load from another
  origin is then refused only when the endpoint allows no origin at all (nothing else
  could frame it); otherwise the browser's own ``frame-ancestors`` check decides.
- A browser without Fetch Metadata sends neither header: nothing is refused here, and
  ``frame-ancestors`` still protects the page.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

FRAME_DESTINATIONS = frozenset({"iframe", "frame"})


@dataclass(frozen=True)
class FrameLoad:
    """A request that loads a frame for a page of another origin. ``origin`` is that
    page's origin (from the Referer), None when the browser did not say."""

    origin: str | None

    def allowed_by(self, origins: Iterable[str]) -> bool:
        """Whether a ``frame-ancestors 'self' <origins>`` policy would show the page. An
        unnamed embedder passes when some origin is allowed: it may be one of them."""
        allowed = {origin_of(origin) for origin in origins} - {None}
        return self.origin in allowed if self.origin else bool(allowed)


def frame_load(headers: Mapping[str, str], own_origin: str) -> FrameLoad | None:
    """The frame load ``headers`` describe, or None: a top-level page, a frame our own
    origin opened, or a browser that sends no Fetch Metadata."""
    if (headers.get("Sec-Fetch-Dest") or "").lower() not in FRAME_DESTINATIONS:
        return None
    if (headers.get("Sec-Fetch-Site") or "").lower() == "same-origin":
        return None
    referer = origin_of(headers.get("Referer"))
    # Our own origin as the Referer of a cross-origin chain (our page, another site, back
    # to us) does not name the frame's parent.
    return FrameLoad(referer if referer != origin_of(own_origin) else None)


def origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of an http(s) URL, lower-cased; None for anything else."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme.lower()]
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    suffix = f":{port}" if port and port != default else ""
    return f"{parts.scheme.lower()}://{host}{suffix}"
