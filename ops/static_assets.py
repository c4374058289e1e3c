"""Fingerprinted static files, served compressed from memory.

Every file under the app's and the blueprints' static folders gets a content hash when
the app is built. ``url_for('static', filename=...)`` (and each ``<bp>.static``) then
adds ``?v=<hash>``, and such a URL is answered with ``Cache-Control: public,
max-age=31536000, immutable``: a phone on a weak network never asks for it again, and a
changed file has a new hash, so a new URL. A request without ``v`` (an old page, a
hand-typed URL) or with another one gets the current file with a short cache.

ES modules import each other by relative URLs (``import ... from "../js/media.js"``), which
a query string on the importer does not reach. So the fingerprinted copy of a module has
its imports of our own files rewritten to their fingerprinted URLs, and a module's hash
covers the hashes of what it imports: a change deep in ``media.js`` gives ``join.js`` a new
URL too. This works in every browser with modules, unlike an import map (Safari 16.4+),
which the old phones we serve may lack. The un-fingerprinted copy is the file as written.

Text bodies (scripts, styles, SVG) are kept in memory (the whole static tree is ~200 KB)
and compressed once each,
on first request, at the highest levels (brotli 11, gzip 9): static files then cost no
compression CPU per request. Nothing secret is in them, so compression is safe (BREACH
needs a secret and attacker-chosen text in one body; see ops/compression.py).
"""
from __future__ import annotations

import hashlib
import mimetypes
import os
import re
import threading
from dataclasses import dataclass, field
from posixpath import dirname, join, normpath

from flask import Flask, Response, request

from ops import compression

IMMUTABLE = "public, max-age=31536000, immutable"
# Un-fingerprinted URLs: long enough to spare a reload, short enough that an edit shows.
SHORT = "public, max-age=60"
_HASH_LENGTH = 12
_MODULE_TYPES = (".js", ".mjs")
# import x from "y"; import "y"; export {x} from "y"; import("y"): the specifier is group 2.
_IMPORT = re.compile(
    r"""((?:\bimport|\bexport)\s[^'";]*?\bfrom\s*|\bimport\s*|\bimport\s*\(\s*)(['"])"""
    r"""([^'"\n]+)\2""")


@dataclass
class Asset:
    """One static file: its bytes as written, its fingerprint, and for a module the copy
    whose imports name fingerprinted URLs. Compressed bodies are made on first use."""

    path: str  # on disk
    url_path: str  # "/static/js/media.js"
    raw: bytes
    mimetype: str
    mtime_ns: int
    version: str = ""
    versioned: bytes = b""
    _encoded: dict[tuple[bool, str], bytes] = field(default_factory=dict)

    def body(self, fingerprinted: bool, encoding: str | None) -> bytes:
        """The bytes to send: the fingerprinted or plain copy, in ``encoding``."""
        plain = self.versioned if fingerprinted else self.raw
        if encoding is None:
            return plain
        key = (fingerprinted, encoding)
        found = self._encoded.get(key)
        if found is None:
            found = compression.compress(plain, encoding, static=True)
            self._encoded[key] = found
        return found


class Assets:
    """The static files of one app, by endpoint and filename, and how to serve them."""

    def __init__(self, app: Flask) -> None:
        self._lock = threading.Lock()
        self.roots: dict[str, tuple[str, str]] = {}  # endpoint -> (folder, url prefix)
        if app.static_folder and app.static_url_path is not None:
            self.roots["static"] = (app.static_folder, app.static_url_path)
        for name, blueprint in app.blueprints.items():
            if blueprint.static_folder and blueprint.has_static_folder:
                prefix = (blueprint.url_prefix or "") + (blueprint.static_url_path or "")
                self.roots[f"{name}.static"] = (blueprint.static_folder, prefix)
        self.reload = bool(app.debug or app.config.get("TEMPLATES_AUTO_RELOAD"))
        self._scan()

    def _scan(self) -> None:
        self.by_url = by_url = {}
        self.by_endpoint: dict[tuple[str, str], Asset] = {}
        for endpoint, (folder, prefix) in self.roots.items():
            for directory, _dirs, files in os.walk(folder):
                for name in files:
                    path = os.path.join(directory, name)
                    filename = os.path.relpath(path, folder).replace(os.sep, "/")
                    asset = _read(path, f"{prefix}/{filename}")
                    by_url[asset.url_path] = asset
                    self.by_endpoint[(endpoint, filename)] = asset
        for asset in by_url.values():
            _fingerprint(asset, by_url, set())

    def find(self, endpoint: str, filename: str) -> Asset | None:
        """The asset behind ``url_for(endpoint, filename=filename)``; re-read when templates
        auto-reload (development) and the file changed on disk."""
        asset = self.by_endpoint.get((endpoint, filename))
        if asset is not None and self.reload:
            try:
                changed = os.stat(asset.path).st_mtime_ns != asset.mtime_ns
            except OSError:
                changed = True
            if changed:
                with self._lock:
                    self._scan()
                asset = self.by_endpoint.get((endpoint, filename))
        return asset


    def module_graph(self, endpoint: str, filename: str, *, dynamic: bool = False
                     ) -> list[Asset]:
        """The module ``filename`` and every module of ours it imports (``dynamic``: with
        ``import()`` too), transitively, in a stable order: what a page that will run them
        may ask for at once (``<link rel="modulepreload">``) instead of one import level
        per round trip."""
        first = self.find(endpoint, filename)
        found: list[Asset] = []
        seen: set[str] = set()
        stack = [first] if first is not None else []
        while stack:
            asset = stack.pop(0)
            if asset.url_path in seen or not asset.url_path.endswith(_MODULE_TYPES):
                continue
            seen.add(asset.url_path)
            found.append(asset)
            text = asset.raw.decode("utf-8", errors="surrogateescape")
            for lead, _quote, specifier in _IMPORT.findall(text):
                if "(" in lead and not dynamic:
                    continue
                if specifier.startswith(("./", "../", "/")) and "?" not in specifier:
                    target = self.by_url.get(normpath(join(dirname(asset.url_path), specifier)))
                    if target is not None:
                        stack.append(target)
        return found


    def inline_module(self, endpoint: str, filename: str, script_root: str = "") -> str:
        """The module's fingerprinted text for an inline ``<script type="module">``: its
        imports of our files, relative to the file's own URL, made absolute (an inline
        module resolves them against the page's URL)."""
        asset = self.find(endpoint, filename)
        text = asset.versioned.decode("utf-8", errors="surrogateescape")

        def absolute(match: re.Match) -> str:
            lead, quote, specifier = match.groups()
            if not specifier.startswith(("./", "../")):
                return match.group(0)
            path, _, query = specifier.partition("?")
            target = normpath(join(dirname(asset.url_path), path))
            return f"{lead}{quote}{script_root}{target}{'?' + query if query else ''}{quote}"

        text = _IMPORT.sub(absolute, text)
        if "</script" in text.lower() or "<!--" in text:
            raise ValueError(f"{filename} cannot be inlined in a <script>")
        return text


def init_app(app: Flask) -> Assets:
    """Fingerprint the static files now (after every blueprint is registered), version
    their URLs and serve them from memory."""
    assets = Assets(app)
    app.extensions["static_assets"] = assets

    def add_version(endpoint: str, values: dict) -> None:
        if endpoint in assets.roots and "v" not in values and "filename" in values:
            asset = assets.find(endpoint, values["filename"])
            if asset is not None:
                values["v"] = asset.version

    app.url_defaults(add_version)
    for endpoint in assets.roots:
        fallback = app.view_functions.get(endpoint)
        if fallback is not None:
            app.view_functions[endpoint] = _serve(assets, endpoint, fallback)
    return assets


def _serve(assets: Assets, endpoint: str, fallback):
    def serve_static(filename: str):
        asset = assets.find(endpoint, filename)
        if asset is None:  # a file added after start-up: Flask's own view
            return fallback(filename=filename)
        fingerprinted = request.args.get("v") == asset.version
        if asset.mimetype not in compression.COMPRESSIBLE:
            # Images, fonts, media: Flask's view (byte ranges, which Safari needs for media).
            response = fallback(filename=filename)
            response.headers["Cache-Control"] = IMMUTABLE if fingerprinted else SHORT
            return response
        encoding = compression.choose(request.headers.get("Accept-Encoding", ""),
                                      asset.mimetype)
        etag = f'"{asset.version}{"" if fingerprinted else "-plain"}-{encoding or "identity"}"'
        response = Response(mimetype=asset.mimetype)
        response.headers["Cache-Control"] = IMMUTABLE if fingerprinted else SHORT
        response.headers["Vary"] = "Accept-Encoding"
        response.headers["ETag"] = etag
        if etag in request.headers.get("If-None-Match", ""):
            response.status_code = 304
            return response
        response.set_data(asset.body(fingerprinted, encoding))
        if encoding:
            response.headers["Content-Encoding"] = encoding
        return response

    serve_static.__name__ = f"serve_{endpoint.replace('.', '_')}"
    return serve_static


def _read(path: str, url_path: str) -> Asset:
    with open(path, "rb") as handle:
        raw = handle.read()
    mimetype = mimetypes.guess_type(path)[0] or "application/octet-stream"
    if path.endswith(_MODULE_TYPES):
        mimetype = "text/javascript"
    return Asset(path=path, url_path=url_path, raw=raw, mimetype=mimetype,
                 mtime_ns=os.stat(path).st_mtime_ns)


def _fingerprint(asset: Asset, by_url: dict[str, Asset], visiting: set[str]) -> str:
    """Set ``asset.version`` (and ``versioned``): a hash of the bytes served under it."""
    if asset.version:
        return asset.version
    if not asset.url_path.endswith(_MODULE_TYPES):
        asset.version = hashlib.sha256(asset.raw).hexdigest()[:_HASH_LENGTH]
        if asset.mimetype not in compression.COMPRESSIBLE:
            asset.raw = b""  # served from disk by Flask's view; only the hash is kept
        asset.versioned = asset.raw
        return asset.version
    visiting.add(asset.url_path)
    text = asset.raw.decode("utf-8", errors="surrogateescape")

    def versioned(match: re.Match) -> str:
        lead, quote, specifier = match.groups()
        if not specifier.startswith(("./", "../", "/")) or "?" in specifier:
            return match.group(0)
        target = by_url.get(normpath(join(dirname(asset.url_path), specifier)))
        if target is None or target.url_path in visiting:
            # Not ours, or an import cycle (which would load a module twice: keep none).
            return match.group(0)
        return f"{lead}{quote}{specifier}?v={_fingerprint(target, by_url, visiting)}{quote}"

    asset.versioned = _IMPORT.sub(versioned, text).encode("utf-8", errors="surrogateescape")
    visiting.discard(asset.url_path)
    asset.version = hashlib.sha256(asset.versioned).hexdigest()[:_HASH_LENGTH]
    return asset.version

