"""The server's request-header reader (ops/server.read_headers): what gevent's own parser
gives for every well-formed request, and a status (so a 400) for a malformed one."""
from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from gevent.pywsgi import WSGIHandler, headers_factory

from ops.server import MAX_HEADER_LINE, MAX_HEADERS, NoDelayHandler, read_headers

PHONE = (b"Host: visits.example.org\r\n"
         b"Connection: keep-alive\r\n"
         b"Cookie: session=eyJwYXRpZW50Ijp7fX0.aT9x2A.abcdef; lang=es\r\n"
         b"Accept-Encoding: gzip, deflate, br\r\n"
         b"Accept-Language: es-MX,es;q=0.9,en;q=0.8\r\n"
         b"User-Agent: Mozilla/5.0 (Linux; Android 8.0) Chrome/90 Mobile\r\n"
         b"Content-Type: application/json\r\n"
         b"Content-Length: 17\r\n"
         b"X-Empty:\r\n"
         b"\r\n")


@pytest.mark.parametrize("head", [
    PHONE,
    PHONE.replace(b"\r\n", b"\n"),  # bare LF line ends, which clients still send
    b"Host: a\r\n\r\n",
    b"\r\n",
    b"Host:   spaced   \r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
])
def test_well_formed_headers_read_as_gevent_reads_them(head):
    ours, theirs = read_headers(io.BytesIO(head + b"the body")), headers_factory(io.BytesIO(head))
    assert ours.status == theirs.status == ""
    assert [(k, v.strip()) for k, v in ours.items()] == \
        [(k, v.strip()) for k, v in theirs.items()]
    # The environ's HTTP_* keys, as gevent's handler builds them from either.
    assert dict(WSGIHandler._headers(SimpleNamespace(headers=ours))) == \
        dict(WSGIHandler._headers(SimpleNamespace(headers=theirs)))
    assert ours.get("content-length") == theirs.get("Content-Length")
    assert ours.typeheader == theirs.typeheader


def test_the_body_is_left_unread():
    stream = io.BytesIO(PHONE + b'{"said": "hello"}')
    read_headers(stream)
    assert stream.read() == b'{"said": "hello"}'


def test_a_header_may_be_removed_case_blind():
    headers = read_headers(io.BytesIO(b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"))
    del headers["content-length"]
    assert headers.get("Content-Length") is None
    assert headers.get("transfer-encoding") == "chunked"


def test_a_folded_line_continues_the_value_after_one_space():
    headers = read_headers(io.BytesIO(b"X-Note: first\r\n   second\r\n\tthird\r\nHost: a\r\n\r\n"))
    assert headers.status == ""
    assert headers.get("X-Note") == "first second third"
    assert headers.get("Host") == "a"


@pytest.mark.parametrize("head, status", [
    (b"Host: a\r\nno colon here\r\n\r\n", "Invalid header"),
    (b"Host : a\r\n\r\n", "Invalid header"),  # whitespace before the colon: RFC 9112 5.1
    (b": no name\r\n\r\n", "Invalid header"),
    (b" starts folded\r\n\r\n", "Invalid header"),
    (b"X-Long: " + b"a" * MAX_HEADER_LINE + b"\r\n\r\n", "Line too long"),
    (b"".join(b"X-%d: v\r\n" % i for i in range(MAX_HEADERS + 1)) + b"\r\n",
     "Too many headers"),
])
def test_a_malformed_request_gets_a_status_so_a_400(head, status):
    assert read_headers(io.BytesIO(head)).status == status


def test_a_connection_closed_mid_headers_ends_them():
    headers = read_headers(io.BytesIO(b"Host: a\r\nAccept: text/html\r\n"))
    assert headers.status == ""
    assert headers.get("Accept") == "text/html"


# Through gevent's real server, on loopback: gevent's own sockets, so the test needs no
# monkey-patching; the hub runs while the client waits.

def _serve(app, handler_class=NoDelayHandler):
    from gevent import pywsgi

    server = pywsgi.WSGIServer(("127.0.0.1", 0), app, handler_class=handler_class, log=None,
                               error_log=None)
    server.start()
    return server


def _exchange(server, request: bytes) -> bytes:
    import gevent.socket

    with gevent.socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


@pytest.mark.parametrize("size", [0, 5, 41_000, NoDelayHandler.COALESCE_BODY_BYTES + 1])
def test_a_response_arrives_whole_with_its_headers(size):
    body = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    probes, sends = [], []

    class CountingSends(NoDelayHandler):
        def _sendall(self, data):
            sends.append(len(data))
            return super()._sendall(data)

    def app(environ, start_response):
        probes.append(environ["HTTP_X_PROBE"])
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    server = _serve(app, CountingSends)
    try:
        reply = _exchange(server, b"GET / HTTP/1.1\r\nHost: a\r\nX-Probe: seen\r\n"
                                  b"Connection: close\r\n\r\n")
    finally:
        server.stop()
    head, _, received = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: %d" % len(body) in head
    assert received == body
    assert probes == ["seen"]
    # Headers and body in one send, unless the body is over the limit.
    assert len(sends) == (2 if size > NoDelayHandler.COALESCE_BODY_BYTES else 1)
    assert sum(sends) == len(reply)


def test_a_malformed_header_is_answered_400_and_never_reaches_the_app():
    called = []

    def app(environ, start_response):
        called.append(True)
        start_response("200 OK", [])
        return [b""]

    server = _serve(app)
    try:
        reply = _exchange(server, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n")
    finally:
        server.stop()
    assert reply.startswith(b"HTTP/1.1 400")
    assert called == []
