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
    .venv/bin/python bench/join_page_weight.py --join-link https://host/j/<token> [--insecure]

The first builds the app on a throw-away SQLite database and opens a join link with the
test client (the whole WSGI app, its compression included). The second measures a
running server over real HTTP (``python app.py``, gunicorn, or the same behind nginx):
each response body is counted as it came off the socket, before any decoding, so a proxy
that compresses, or does not, is what is measured. Either prints one line per file (bytes
sent, bytes decoded) and the total, and exits 1 above the budget or when the page names
another origin. ``measure()`` is what the test suite runs too, both ways.
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


def http_fetch(session, origin: str, encoding: str = ENCODING, *,
               verify: bool = True) -> Callable[[str], tuple[bytes, int] | None]:
    """A ``fetch`` for ``measure`` over real HTTP with a ``requests.Session``: the body is
    read undecoded from the socket (after de-chunking), so its length is what was sent."""
    def fetch(target: str) -> tuple[bytes, int] | None:
        response = session.get(origin + target, headers={"Accept-Encoding": encoding},
                               stream=True, timeout=30, verify=verify)
        with response:
            if response.status_code != 200:
                return None
            sent = response.raw.read(decode_content=False)
        return _decode(sent, response.headers.get("Content-Encoding")), len(sent)

    return fetch


def measure(client, path: str = "/join",
            fetch: Callable[[str], tuple[bytes, int] | None] | None = None,
            encoding: str = ENCODING, base: str = BASE) -> Report:
    """Load ``path`` with a Flask test client (or any ``fetch(path) -> (body, bytes sent)
    | None``, e.g. ``http_fetch``), accepting ``encoding``, and every asset of ``base``'s
    origin it pulls in; other-origin URLs are listed, not fetched."""
    if fetch is None:
        def fetch(target: str) -> tuple[bytes, int] | None:
            response = client.get(target, headers={"Accept-Encoding": encoding})
            if response.status_code != 200:
                return None
            sent = response.get_data()
            return _decode(sent, response.headers.get("Content-Encoding")), len(sent)

    report = Report(encoding=encoding)
    own = urlsplit(base)
    page_url = urljoin(base, path)
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
        if (parts.scheme, parts.netloc) != (own.scheme, own.netloc):
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
    """Report the join page's weight: of a throw-away app, or of a running server."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoding", default=ENCODING, choices=["gzip", "br", "identity"])
    parser.add_argument("--join-link", metavar="URL",
                        help="measure a running server over HTTP, from this /j/<token> link")
    parser.add_argument("--insecure", action="store_true",
                        help="with --join-link: accept a self-signed certificate")
    args = parser.parse_args()
    if args.join_link:
        report = _measure_live(args.join_link, args.encoding, verify=not args.insecure)
    else:
        report = _measure_app(args.encoding)
    print(report.table())
    over = report.total_gzip > BUDGET_BYTES
    if over:
        print(f"over budget by {report.total_gzip - BUDGET_BYTES} bytes", file=sys.stderr)
    if report.other_origins or report.missing or report.unversioned:
        print("the page names other origins, missing or un-fingerprinted files",
              file=sys.stderr)
    return 1 if over or report.other_origins or report.missing or report.unversioned else 0


def _measure_live(join_link: str, encoding: str, *, verify: bool) -> Report:
    """Open the join link on a running server (its redirect sets the session cookie),
    then measure the page it lands on over HTTP."""
    import requests

    session = requests.Session()
    session.trust_env = False
    landed = session.get(join_link, timeout=30, verify=verify)
    if landed.status_code != 200:
        raise SystemExit(f"{join_link} answered {landed.status_code}")
    parts = urlsplit(landed.url)
    origin = f"{parts.scheme}://{parts.netloc}"
    return measure(None, parts.path, fetch=http_fetch(session, origin, encoding, verify=verify),
                   encoding=encoding, base=origin)


def _measure_app(encoding: str) -> Report:
    """Build a throw-away app on SQLite, open a join link with its test client, measure."""
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
        report = measure(client, "/join", encoding=encoding)
        with app.app_context():
            from extensions import db

            db.engine.dispose()
    return report


if __name__ == "__main__":
    raise SystemExit(main())
