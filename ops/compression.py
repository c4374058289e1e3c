"""Compressed responses (gzip, and brotli for static files when the client asks for it),
made by the app itself: the one-command default runs with no proxy in front to do it.

Pages are compressed per request at cheap levels, because the join page must stay near
1 ms of CPU per request (bench/join_page.py). Inside a real request (cold caches) zlib
cost about three times what a warm loop shows: on the join page's 16 KB of HTML, zlib
level 1 ~0.12 ms, brotli 0 ~0.1 ms, brotli 2 ~0.27 ms, zlib 6 ~0.3 ms. So gzip comes from
ISA-L (python-isal, ``isal_zlib``: the same gzip format, level 1 in ~0.035 ms, 4.5 KB),
with zlib level 1 as the fallback. That is smaller and cheaper than brotli at any quality
this budget allows (quality 0: 4.7 KB), so pages go out gzipped even to a browser that
also takes brotli; static files, compressed once at brotli 11, go out as brotli. In
bench/join_page.py (lowest of runs on the shared box): 0.88 ms CPU per request
uncompressed, 0.95-0.97 ms gzipped with ISA-L (1.03-1.07 ms with zlib level 1, 1.1 ms with
zlib level 3), 0.98-1.0 ms with brotli 0.
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
try:  # Intel ISA-L's deflate: gzip at a third of zlib's CPU (levels 0-3).
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - it is a dependency; zlib does the same, slower
    _fast_zlib = zlib

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


def choose(accept_encoding: str, mimetype: str, *, per_request: bool = False) -> str | None:
    """``"br"``, ``"gzip"`` or None for a response of ``mimetype`` to this client; for a
    body compressed ``per_request``, gzip first when ISA-L makes it the cheaper one."""
    if mimetype not in COMPRESSIBLE or not accept_encoding:
        return None
    prefer = ("gzip", "br") if per_request and _fast_zlib is not zlib else ("br", "gzip")
    return _negotiate(accept_encoding, prefer)


@lru_cache(maxsize=256)
def _negotiate(accept_encoding: str, prefer: tuple[str, ...]) -> str | None:
    """The first coding of ``prefer`` the header allows (q > 0); ``*`` allows any."""
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
    for coding in prefer:
        if coding == "br" and brotli is None:
            continue
        if allowed.get(coding, allowed.get("*", 0.0)) > 0:
            return coding
    return None


def compress(data: bytes, coding: str, *, static: bool = False) -> bytes:
    """``data`` in ``coding``, at the per-request levels or, for static files, the top ones."""
    if coding == "br":
        return brotli.compress(data, quality=STATIC_BROTLI_QUALITY if static else BROTLI_QUALITY)
    # wbits 31: a gzip member (header, deflate, CRC trailer) in one C call. Static files
    # are compressed once, so zlib's best level; pages with ISA-L's fast one.
    if static:
        return zlib.compress(data, STATIC_GZIP_LEVEL, wbits=31)
    return _fast_zlib.compress(data, GZIP_LEVEL, wbits=31)


def _compress_response(response):
    if response.headers.pop(OPT_OUT_HEADER, None) is not None:
        return response
    if (response.direct_passthrough or response.is_streamed or response.status_code != 200
            or "Content-Encoding" in response.headers
            or request.blueprint in UNCOMPRESSED_BLUEPRINTS):
        return response
    coding = choose(request.headers.get("Accept-Encoding", ""), response.mimetype,
                    per_request=True)
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
