"""What the app sends on a weak network: compressed pages and scripts, and static files
under fingerprinted URLs a phone caches for a year (ops/compression.py,
ops/static_assets.py)."""
from __future__ import annotations

import gzip
import re

import brotli
import pytest
from flask import Flask

from ops import static_assets
from tests import factories
from tests.integration.test_patient_join import token_for

_ASSET = re.compile(r'(?:src|href)="(/static/[^"]+)"')


@pytest.fixture
def joined(app, client):
    """A patient's browser that opened their join link."""
    with app.app_context():
        visit = factories.make_visit()
        client.get(f"/j/{token_for(app, visit.patient)}")
    return client


def test_the_join_page_is_gzipped_for_a_browser_that_asks(joined):
    plain = joined.get("/join")

    packed = joined.get("/join", headers={"Accept-Encoding": "gzip, deflate"})

    assert "Content-Encoding" not in plain.headers
    assert packed.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in packed.headers["Vary"]
    page = gzip.decompress(packed.data).decode()
    assert 'data-testid="join-button"' in page and 'data-testid="lobby"' in page
    assert len(packed.data) < len(plain.data) / 3
    assert packed.headers["Cache-Control"] == "no-store"  # still a patient page


def test_brotli_when_the_browser_asks_for_it_and_it_pays(joined):
    # The join page inlines its styles; the modules it preloads are static files.
    css = next(u for u in _ASSET.findall(joined.get("/join").get_data(as_text=True))
               if "media.js" in u)
    everything = "gzip, deflate, br, zstd"

    page = joined.get("/join", headers={"Accept-Encoding": everything})
    only_brotli = joined.get("/join", headers={"Accept-Encoding": "br"})
    static = joined.get(css, headers={"Accept-Encoding": everything})
    refused = joined.get(css, headers={"Accept-Encoding": "br;q=0, gzip"})

    # Per request, ISA-L's gzip is smaller and cheaper than brotli at quality 0.
    assert page.headers["Content-Encoding"] == "gzip"
    assert only_brotli.headers["Content-Encoding"] == "br"
    assert 'data-testid="join-button"' in brotli.decompress(only_brotli.data).decode()
    # Static files are compressed once, at brotli's best.
    assert static.headers["Content-Encoding"] == "br"
    assert brotli.decompress(static.data) == joined.get(css).data
    assert refused.headers["Content-Encoding"] == "gzip"


def test_the_join_pages_assets_are_fingerprinted_and_immutable(joined):
    page = joined.get("/join").get_data(as_text=True)
    urls = _ASSET.findall(page)

    answers = {url: joined.get(url, headers={"Accept-Encoding": "gzip"}) for url in urls}

    assert {url.split("?")[0] for url in urls} >= {
        "/static/js/media.js", "/static/js/visit_session.js",
        "/static/js/socket.js", "/static/vendor/socket.io-4.8.4.esm.min.js"}
    assert all(re.search(r"\?v=[0-9a-f]{12}$", url) for url in urls), urls
    for url, answer in answers.items():
        assert answer.status_code == 200, url
        assert answer.headers["Cache-Control"] == "public, max-age=31536000, immutable", url
    script = next(a for u, a in answers.items() if "media.js" in u)
    assert script.headers["Content-Encoding"] == "gzip"
    assert script.mimetype == "text/javascript"
    # join.js is inline (one request fewer), its imports absolute and fingerprinted.
    inline = re.search(r'<script type="module">(.*?)</script>', page, re.S).group(1)
    assert re.search(r'from "/static/js/media\.js\?v=[0-9a-f]{12}"', inline)
    assert re.search(r'import\("/static/js/visit_session\.js\?v=[0-9a-f]{12}"\)', inline)


def test_imports_lead_to_immutable_fingerprinted_modules_down_the_tree(joined):
    seen, queue = set(), [u for u in _ASSET.findall(joined.get("/join").get_data(as_text=True))
                          if u.split("?")[0].endswith(".js")]
    while queue:
        url = queue.pop()
        if url in seen:
            continue
        seen.add(url)
        answer = joined.get(url)
        assert answer.headers["Cache-Control"].endswith("immutable"), url
        base = url.split("?")[0].rsplit("/", 1)[0]
        for specifier in re.findall(r'(?:from\s*|import\s*\(\s*)"(\.{1,2}/[^"]+)"',
                                    answer.get_data(as_text=True)):
            assert "?v=" in specifier, (url, specifier)
            parts = (base + "/" + specifier).split("/")
            stack: list[str] = []
            for part in parts:
                if part == "..":
                    stack.pop()
                elif part != ".":
                    stack.append(part)
            queue.append("/".join(stack))

    assert any("socket.io" in url for url in seen)
    assert any("visit_session.js" in url for url in seen)


def test_an_unfingerprinted_url_gets_the_plain_file_with_a_short_cache(joined, app):
    plain = joined.get("/static/patient_join/join.js")
    stale = joined.get("/static/patient_join/join.js?v=000000000000")

    assert plain.headers["Cache-Control"] == static_assets.SHORT
    assert stale.headers["Cache-Control"] == static_assets.SHORT
    with open(app.extensions["static_assets"].find("patient_join.static", "join.js").path,
              "rb") as handle:
        assert plain.data == handle.read()


def test_a_fingerprinted_asset_answers_304_to_its_etag(joined):
    url = next(u for u in _ASSET.findall(joined.get("/join").get_data(as_text=True))
               if "media.js" in u)
    first = joined.get(url, headers={"Accept-Encoding": "br"})

    again = joined.get(url, headers={"Accept-Encoding": "br",
                                     "If-None-Match": first.headers["ETag"]})

    assert again.status_code == 304 and again.data == b""


def test_admin_pages_are_not_compressed(client):
    # They carry a CSRF token beside text from the request: BREACH (ops/compression.py).
    page = client.get("/admin/login", headers={"Accept-Encoding": "gzip, br"})

    assert page.status_code == 200
    assert "Content-Encoding" not in page.headers
    assert "csrf_token" in page.get_data(as_text=True)


def _tiny_app(folder) -> Flask:
    application = Flask("tiny", static_folder=str(folder))
    static_assets.init_app(application)
    return application


def test_a_changed_file_gets_a_new_url_and_so_does_a_module_importing_it(tmp_path):
    (tmp_path / "lib.js").write_text('export const answer = 41;\n')
    (tmp_path / "main.js").write_text('import { answer } from "./lib.js";\nconsole.log(answer);\n')
    (tmp_path / "site.css").write_text("body { color: black }\n")

    def urls() -> dict[str, str]:
        application = _tiny_app(tmp_path)
        with application.test_request_context():
            from flask import url_for

            return {name: url_for("static", filename=name)
                    for name in ("lib.js", "main.js", "site.css")}

    before = urls()
    (tmp_path / "lib.js").write_text('export const answer = 42;\n')
    after = urls()

    assert after["lib.js"] != before["lib.js"]
    assert after["main.js"] != before["main.js"]  # its import names the new lib.js URL
    assert after["site.css"] == before["site.css"]
    served = _tiny_app(tmp_path).test_client().get(after["main.js"]).get_data(as_text=True)
    assert f'from "./lib.js?v={after["lib.js"].split("v=")[1]}"' in served


def test_an_image_is_fingerprinted_and_served_by_flask_with_byte_ranges(tmp_path):
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8)
    application = _tiny_app(tmp_path)
    with application.test_request_context():
        from flask import url_for

        url = url_for("static", filename="logo.png")

    part = application.test_client().get(url, headers={"Range": "bytes=0-7",
                                                       "Accept-Encoding": "gzip"})

    assert re.search(r"\?v=[0-9a-f]{12}$", url)
    assert part.status_code == 206 and part.data == b"\x89PNG\r\n\x1a\n"
    assert part.headers["Cache-Control"] == static_assets.IMMUTABLE
    assert "Content-Encoding" not in part.headers
