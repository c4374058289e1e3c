"""How heavy the patient's join page is on a weak network: the HTML and every same-origin
asset it loads (stylesheets, scripts and the ES modules they import, statically or
lazily, fonts and images named in CSS), each counted as the app sends it to a browser
that accepts gzip (``--encoding br`` for brotli): the app compresses its own responses
(ops/compression.py), so what is measured is the wire, not an estimate. A file the app
sent uncompressed counts at full size. Static URLs must carry their fingerprint
(``?v=``); any that does not is listed and fails the run.

Budget: 100 KB compressed in total, before any camera or microphone media, and nothing
from another origin (no CDN, no web font service: an old phone on 3G pays for each
extra connection, and a third party would learn who visits a clinic).

    .venv/bin/python bench/join_page_weight.py [--encoding gzip|br|identity]

builds the app on a throw-away SQLite database, opens a join link with the test client,
prints one line per file and the total, and exits 1 above the budget or when the page
names another origin. ``measure()`` is what the test suite runs too.
"""
from __future__ import annotations

import gzip
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

BUDGET_BYTES = 100 * 1024
ENCODING = "gzip"
BASE = "http://localhost"

_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")
# import x from "y"; import "y"; export {x} from "y"; import("y")
_JS_IMPORT = re.compile(
    r"""(?:\bimport|\bexport)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]"""
    r"""|\bimport\s*['"]([^'"]+)['"]"""
    r"""|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)""")


@dataclass
class Report:
    """Sizes in bytes by path (query left off): (raw, as sent); URLs of other origins;
    paths that failed; static URLs without a fingerprint."""

    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    other_origins: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unversioned: list[str] = field(default_factory=list)
    encoding: str = ENCODING

    @property
    def total_gzip(self) -> int:
        """The total on the wire (named for the gzip the page is measured with)."""
        return sum(sent for _raw, sent in self.sizes.values())

    def table(self) -> str:
        lines = [f"{self.encoding:>8} {'raw':>8}  path"]
        for path, (raw, gzipped) in sorted(self.sizes.items(), key=lambda item: -item[1][1]):
            lines.append(f"{gzipped:>8} {raw:>8}  {path}")
        lines.append(f"{self.total_gzip:>8} {'':>8}  total (budget {BUDGET_BYTES})")
        lines += [f"other origin: {url}" for url in self.other_origins]
        lines += [f"missing: {path}" for path in self.missing]
        lines += [f"not fingerprinted: {path}" for path in self.unversioned]
        return "\n".join(lines)


class _Assets(HTMLParser):
    """URLs an HTML page makes the browser load before any user action."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []  # (url, kind)
        self._in_module_script = False
        self.inline_modules: list[str] = []
        self.inline_styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        rel = set(values.get("rel", "").lower().split())
        if tag == "link" and values.get("href") and rel & {"stylesheet", "icon", "preload",
                                                           "modulepreload", "manifest"}:
            kind = "css" if "stylesheet" in rel else "js" if "modulepreload" in rel else "other"
            self.found.append((values["href"], kind))
        elif tag == "script" and values.get("src"):
            self.found.append((values["src"], "js"))
        elif tag == "script" and values.get("type") == "module":
            self._in_module_script = True
        elif tag in ("img", "source", "audio", "video", "iframe", "embed") and values.get("src"):
            self.found.append((values["src"], "other"))
        elif tag == "style":
            self._in_style = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_module_script = False
        elif tag == "style":
            self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_module_script:
            self.inline_modules.append(data)
        elif self._in_style:
            self.inline_styles.append(data)


def _references(body: bytes, kind: str) -> list[tuple[str, str]]:
    text = body.decode("utf-8", errors="replace")
    if kind == "css":
        return [(a or b, "css" if b else "other") for a, b in _CSS_URL.findall(text)]
    if kind == "js":
        return [(a or b or c, "js") for a, b, c in _JS_IMPORT.findall(text)]
    return []


def _decode(body: bytes, coding: str | None) -> bytes:
    if coding == "gzip":
        return gzip.decompress(body)
    if coding == "br":
        import brotli

        return brotli.decompress(body)
    return body


def measure(client, path: str = "/join",
            fetch: Callable[[str], tuple[bytes, int] | None] | None = None,
            encoding: str = ENCODING) -> Report:
    """Load ``path`` with a Flask test client (or any ``fetch(path) -> (body, bytes sent)
    | None``), accepting ``encoding``, and every same-origin asset it pulls in;
    other-origin URLs are listed, not fetched."""
    if fetch is None:
        def fetch(target: str) -> tuple[bytes, int] | None:
            response = client.get(target, headers={"Accept-Encoding": encoding})
            if response.status_code != 200:
                return None
            sent = response.get_data()
            return _decode(sent, response.headers.get("Content-Encoding")), len(sent)

    report = Report(encoding=encoding)
    page_url = urljoin(BASE, path)
    fetched = fetch(path)
    if fetched is None:
        raise RuntimeError(f"{path} did not answer 200")
    html, sent = fetched
    report.sizes[path] = (len(html), sent)
    parser = _Assets()
    parser.feed(html.decode("utf-8", errors="replace"))
    queue: list[tuple[str, str, str]] = [(url, kind, page_url) for url, kind in parser.found]
    for inline in parser.inline_modules:
        queue += [(url, kind, page_url) for url, kind in _references(inline.encode(), "js")]
    for inline in parser.inline_styles:
        queue += [(url, kind, page_url) for url, kind in _references(inline.encode(), "css")]
    while queue:
        reference, kind, referrer = queue.pop(0)
        if reference.startswith(("data:", "blob:", "#")):
            continue
        absolute = urljoin(referrer, reference)
        parts = urlsplit(absolute)
        if (parts.scheme, parts.netloc) != ("http", "localhost"):
            if absolute not in report.other_origins:
                report.other_origins.append(absolute)
            continue
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        if parts.path in report.sizes or target in report.missing:
            continue
        if "/static/" in parts.path and "v=" not in parts.query:
            report.unversioned.append(target)
        fetched = fetch(target)
        if fetched is None:
            report.missing.append(target)
            continue
        body, sent = fetched
        report.sizes[parts.path] = (len(body), sent)
        queue += [(url, found_kind, absolute) for url, found_kind in _references(body, kind)]
    return report


def main() -> int:
    """Build a throw-away app, open a join link, and report the join page's weight."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoding", default=ENCODING, choices=["gzip", "br", "identity"])
    args = parser.parse_args()

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root))
    import flask_migrate

    from app import create_app
    from tests import factories

    with tempfile.TemporaryDirectory() as folder:
        app = create_app({
            "INSTANCE_PATH": folder, "DATABASE_URL": f"sqlite:///{folder}/app.db",
            "SANDBOX": False, "ASYNC_MODE": "threading", "LOG_LEVEL": "WARNING",
            "SECRET_KEY": "bench-secret-key-0123456789abcdefghijkl",
        })
        with app.app_context():
            flask_migrate.upgrade(directory=str(root / "migrations"))
            token = factories.join_token(factories.make_visit().patient)
        client = app.test_client()
        client.get(f"/j/{token}")
        report = measure(client, "/join", encoding=args.encoding)
        with app.app_context():
            from extensions import db

            db.engine.dispose()
    print(report.table())
    over = report.total_gzip > BUDGET_BYTES
    if over:
        print(f"over budget by {report.total_gzip - BUDGET_BYTES} bytes", file=sys.stderr)
    if report.other_origins or report.missing or report.unversioned:
        print("the page names other origins, missing or un-fingerprinted files",
              file=sys.stderr)
    return 1 if over or report.other_origins or report.missing or report.unversioned else 0


if __name__ == "__main__":
    raise SystemExit(main())
