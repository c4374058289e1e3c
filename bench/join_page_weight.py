"""How heavy the patient's join page is on a weak network: the HTML and every same-origin
asset it loads (stylesheets, scripts and the ES modules they import, statically or
lazily, fonts and images named in CSS), each gzipped as a server would send it.

Budget: 100 KB compressed in total, before any camera or microphone media, and nothing
from another origin (no CDN, no web font service: an old phone on 3G pays for each
extra connection, and a third party would learn who visits a clinic).

    .venv/bin/python bench/join_page_weight.py

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
# nginx and gunicorn setups commonly use level 6; level 9 saves little more.
GZIP_LEVEL = 6
BASE = "http://localhost"

_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")
# import x from "y"; import "y"; export {x} from "y"; import("y")
_JS_IMPORT = re.compile(
    r"""(?:\bimport|\bexport)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]"""
    r"""|\bimport\s*['"]([^'"]+)['"]"""
    r"""|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)""")


@dataclass
class Report:
    """Sizes in bytes by path: (raw, gzipped); URLs of other origins; paths that failed."""

    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)
    other_origins: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def total_gzip(self) -> int:
        return sum(gzipped for _raw, gzipped in self.sizes.values())

    def table(self) -> str:
        lines = [f"{'gzip':>8} {'raw':>8}  path"]
        for path, (raw, gzipped) in sorted(self.sizes.items(), key=lambda item: -item[1][1]):
            lines.append(f"{gzipped:>8} {raw:>8}  {path}")
        lines.append(f"{self.total_gzip:>8} {'':>8}  total (budget {BUDGET_BYTES})")
        lines += [f"other origin: {url}" for url in self.other_origins]
        lines += [f"missing: {path}" for path in self.missing]
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


def measure(client, path: str = "/join",
            fetch: Callable[[str], bytes | None] | None = None) -> Report:
    """Load ``path`` with a Flask test client (or any ``fetch(path) -> bytes | None``) and
    every same-origin asset it pulls in; other-origin URLs are listed, not fetched."""
    if fetch is None:
        def fetch(target: str) -> bytes | None:
            response = client.get(target)
            return response.data if response.status_code == 200 else None

    report = Report()
    page_url = urljoin(BASE, path)
    html = fetch(path)
    if html is None:
        raise RuntimeError(f"{path} did not answer 200")
    report.sizes[path] = (len(html), len(gzip.compress(html, GZIP_LEVEL)))
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
        if target in report.sizes or target in report.missing:
            continue
        body = fetch(target)
        if body is None:
            report.missing.append(target)
            continue
        report.sizes[target] = (len(body), len(gzip.compress(body, GZIP_LEVEL)))
        queue += [(url, found_kind, absolute) for url, found_kind in _references(body, kind)]
    return report


def main() -> int:
    """Build a throw-away app, open a join link, and report the join page's weight."""
    import tempfile

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
        report = measure(client, "/join")
        with app.app_context():
            from extensions import db

            db.engine.dispose()
    print(report.table())
    over = report.total_gzip > BUDGET_BYTES
    if over:
        print(f"over budget by {report.total_gzip - BUDGET_BYTES} bytes", file=sys.stderr)
    if report.other_origins or report.missing:
        print("the page names other origins or missing files", file=sys.stderr)
    return 1 if over or report.other_origins or report.missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
