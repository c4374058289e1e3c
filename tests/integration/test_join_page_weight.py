"""The join page's weight as a running server sends it over HTTP, counted from the bytes
that came off the socket, equals what the test-client measurement reports, for each
encoding a browser may accept; so the figures docs quote are the wire's."""
from __future__ import annotations

import pytest
import requests

from bench.join_page_weight import BUDGET_BYTES, http_fetch, measure
from tests import factories


@pytest.fixture(scope="module")
def join_link(live_server) -> str:
    with live_server.app.app_context():
        token = factories.join_token(factories.make_visit().patient)
    return f"{live_server.url}/j/{token}"


@pytest.mark.parametrize("encoding", ["gzip", "br", "identity"])
def test_the_wire_weight_over_http_is_what_the_bench_reports(live_server, join_link,
                                                            encoding):
    browser = requests.Session()
    browser.trust_env = False
    assert browser.get(join_link, timeout=30).url.endswith("/join")
    client = live_server.app.test_client()
    client.get(join_link.removeprefix(live_server.url))

    wire = measure(None, "/join", fetch=http_fetch(browser, live_server.url, encoding),
                   encoding=encoding, base=live_server.url)
    local = measure(client, "/join", encoding=encoding)

    assert wire.missing == [] and wire.other_origins == [] and wire.unversioned == []
    # The page itself differs per request (its tokens and times), so compare the assets
    # exactly and the page within a few bytes.
    page = "/join"
    assert {p: s for p, s in wire.sizes.items() if p != page} == \
        {p: s for p, s in local.sizes.items() if p != page}
    assert abs(wire.sizes[page][1] - local.sizes[page][1]) < 64
    if encoding == "identity":
        assert all(raw == sent for raw, sent in wire.sizes.values())
    else:
        assert wire.total_gzip < sum(raw for raw, _sent in wire.sizes.values()) / 2
        assert wire.total_gzip <= BUDGET_BYTES, wire.table()
