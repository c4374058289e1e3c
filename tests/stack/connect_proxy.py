"""An HTTP CONNECT proxy on loopback that stands in for DNS.

Chromium reaches ``vv.test`` and ``ehr.test`` through ``--host-resolver-rules``; the app's
own server-side requests (SMART discovery, tokens and FHIR reads from the sandbox EHR,
the sandbox's HL7 message) go to its public URL ``https://vv.test:<port>`` too, and no
resolver on this machine knows that name. With ``HTTPS_PROXY`` pointing here, requests
opens a tunnel ("CONNECT vv.test:<port>") that this proxy connects to 127.0.0.1; TLS then
runs end to end through it, checked against the test's CA (``REQUESTS_CA_BUNDLE``).
"""
from __future__ import annotations

import select
import socket
import socketserver
import threading

# Only the test's own names: anything else is refused rather than sent out.
NAMES = {"vv.test", "ehr.test", "127.0.0.1", "localhost"}


class _Tunnel(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(10)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.request.recv(4096)
            if not chunk or len(head) > 16384:
                return
            head += chunk
        method, target, *_ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
        host, _, port = target.rpartition(":")
        if method != "CONNECT" or host not in NAMES or not port.isdigit():
            self.request.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
        except OSError:
            self.request.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            return
        self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.request.settimeout(None)
        upstream.settimeout(None)
        with upstream:
            ends = [self.request, upstream]
            while True:
                readable, _, failed = select.select(ends, [], ends, 120)
                if failed or not readable:
                    return
                for end in readable:
                    data = end.recv(65536)
                    if not data:
                        return
                    (upstream if end is self.request else self.request).sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class ConnectProxy:
    """``with ConnectProxy() as proxy: proxy.url``"""

    def __init__(self) -> None:
        self.server = _Server(("127.0.0.1", 0), _Tunnel)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ConnectProxy:  # noqa: PYI034
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.server.shutdown()
        self.server.server_close()
