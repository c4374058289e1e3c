"""Compressed responses (brotli when the client asks for it, else gzip), made by the app
itself: the one-command default runs with no proxy in front to do it.

Pages are compressed per request at the cheapest levels, because the join page must stay
near 1 ms of CPU per request (bench/join_page.py). Measured on its 16 KB of HTML (2-core
box): brotli 0 gives 4.7 KB, gzip 1 4.7 KB; brotli 2 / gzip 3 would give 4.3 / 4.4 KB,
gzip 6 4.0 KB. In a warm loop each costs 0.04-0.12 ms, but inside a real request (cold
caches) about three times that, so the smallest levels win: on the whole page weight
(35 KB) the 0.4 KB they give up is 1 %. In bench/join_page.py: ~0.86-0.90 ms CPU per
request uncompressed, ~0.97-1.0 ms with brotli, ~1.03-1.07 ms with gzip (lowest of runs).
Static files are compressed once at the top levels and kept (ops/static_assets.py).
Socket.IO traffic does not pass through here.

BREACH: a compressed body's length tells an on-path observer whether attacker-chosen text
repeats a secret in the same body. Admin, staff sign-in and sandbox pages carry CSRF
tokens or OAuth codes next to text from the request (form values, errors, search
fields), so they are never compressed. Patient and provider pages carry no secret the
request could echo: the join page holds no token (the session cookie is a header, never
in the body) and reflects nothing from the URL; the device test reflects only its own
valid ``?ctx=`` token, nothing else from the request. A page that starts to carry both
must join ``UNCOMPRESSED_BLUEPRINTS`` or set ``response.headers["X-No-Compression"]``
(removed before sending).
"""
from __future__ import annotations

import zlib
from functools import lru_cache

from flask import Flask, request

try:  # Google's brotli bindings; without them, gzip only.
    import brotli
except ImportError:  # pragma: no cover - it is a dependency; kept for a partial install
    brotli = None

COMPRESSIBLE = frozenset({
    "text/html", "text/css", "text/javascript", "application/javascript", "application/json",
    "image/svg+xml", "text/plain", "application/manifest+json",
})
# Pages with secrets beside reflected request text (see BREACH above).
UNCOMPRESSED_BLUEPRINTS = frozenset({"admin", "staff_sso", "sandbox_ehr"})
OPT_OUT_HEADER = "X-No-Compression"
# Below this a response fits one packet anyway.
MIN_SIZE = 512
# Per request: cheap. Once per static file: the smallest.
GZIP_LEVEL, BROTLI_QUALITY = 1, 0
STATIC_GZIP_LEVEL, STATIC_BROTLI_QUALITY = 9, 11


def init_app(app: Flask) -> None:
    """Compress the app's own dynamic responses (static files compress themselves)."""
    app.after_request(_compress_response)


def choose(accept_encoding: str, mimetype: str) -> str | None:
    """``"br"``, ``"gzip"`` or None for a response of ``mimetype`` to this client."""
    if mimetype not in COMPRESSIBLE or not accept_encoding:
        return None
    return _negotiate(accept_encoding)


@lru_cache(maxsize=256)
def _negotiate(accept_encoding: str) -> str | None:
    """The best coding the header allows (q > 0), brotli first; ``*`` allows both."""
    allowed: dict[str, float] = {}
    for part in accept_encoding.lower().split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        allowed[name.strip()] = quality
    for coding in ("br", "gzip"):
        if coding == "br" and brotli is None:
            continue
        if allowed.get(coding, allowed.get("*", 0.0)) > 0:
            return coding
    return None


def compress(data: bytes, coding: str, *, static: bool = False) -> bytes:
    """``data`` in ``coding``, at the per-request levels or, for static files, the top ones."""
    if coding == "br":
        return brotli.compress(data, quality=STATIC_BROTLI_QUALITY if static else BROTLI_QUALITY)
    # wbits 31: a gzip member (header, deflate, CRC trailer) in one C call.
    return zlib.compress(data, STATIC_GZIP_LEVEL if static else GZIP_LEVEL, wbits=31)


def _compress_response(response):
    if response.headers.pop(OPT_OUT_HEADER, None) is not None:
        return response
    if (response.direct_passthrough or response.is_streamed or response.status_code != 200
            or "Content-Encoding" in response.headers
            or request.blueprint in UNCOMPRESSED_BLUEPRINTS):
        return response
    coding = choose(request.headers.get("Accept-Encoding", ""), response.mimetype)
    if coding is None:
        return response
    data = response.get_data()
    if len(data) < MIN_SIZE:
        return response
    response.set_data(compress(data, coding))
    response.headers["Content-Encoding"] = coding
    vary = response.headers.get("Vary")
    if not vary:
        response.headers["Vary"] = "Accept-Encoding"
    elif "accept-encoding" not in vary.lower():
        response.headers["Vary"] = f"{vary}, Accept-Encoding"
    return response
