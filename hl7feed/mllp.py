"""MLLP listener: HL7 v2 over a plain TCP connection, as interface engines speak it.

Each message travels in a frame ``0x0B <message> 0x1C 0x0D``; every frame gets one ACK
frame on the same connection, in order. MLLP has no signature header: the trust is the
connection itself, so the listener binds to loopback only (an interface engine on the
same host, or a TLS-terminating tunnel) unless it is given a TLS certificate, and then it
can require a client certificate from a CA the hospital names (mutual TLS).

The messages go through the same intake as ``POST /hl7/v2/<endpoint>`` (deduplication,
lifecycle, ACK codes); only the signature check is replaced by the transport's trust.
"""
from __future__ import annotations

import ipaddress
import logging
import socket
import socketserver
import ssl
from dataclasses import dataclass

from flask import Flask

from hl7feed import hl7, services

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
# The HTTP intake's limit: a frame longer than this is a broken sender, not a message.
MAX_FRAME_BYTES = 1024 * 1024
# An idle connection is closed after this long; engines reconnect when they next send.
IDLE_TIMEOUT_SECONDS = 300


class MllpRefused(Exception):
    """The listener would be unsafe as configured; the message says what to change."""


@dataclass(frozen=True)
class TlsFiles:
    certificate: str
    private_key: str
    # Clients must present a certificate signed by this CA bundle; None: any client.
    client_ca: str | None = None


def check_bind(host: str, tls: TlsFiles | None) -> None:
    """Without TLS, only a loopback address: HL7 in clear over a network is PHI in clear."""
    if tls is not None:
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise MllpRefused(f"refusing to listen on {host} without TLS: HL7 carries patient "
                          "data; give --tls-cert and --tls-key, or listen on 127.0.0.1")


def ack_for(app: Flask, endpoint_name: str, frame: bytes) -> bytes:
    """The ACK for one framed message (never raises: every frame is answered)."""
    with app.app_context():
        try:
            result = services.receive(endpoint_name, frame, None, trusted_transport=True)
        except hl7.UnreadableMessage as exc:
            log.info("mllp message unreadable", extra={"endpoint": endpoint_name,
                                                        "reason": str(exc)})
            return hl7.ack(None, "AR", error="no readable MSH segment",
                           error_code="100").encode()
        except services.UnknownEndpoint:
            return hl7.ack(None, "AR", error="unknown or unapproved endpoint").encode()
        except Exception:  # the feed must never stall on one message: AR makes it resend
            log.exception("mllp message failed", extra={"endpoint": endpoint_name})
            return hl7.ack(None, "AR", error="temporary failure, please resend").encode()
        log.info("mllp message acknowledged", extra={
            "endpoint": endpoint_name, "control_id": result.control_id,
            "message_type": result.message_type, "ack_code": result.code,
            "applied": result.applied})
        return result.ack.encode("utf-8")


class _Connection(socketserver.BaseRequestHandler):
    """One engine connection: read frames, answer each in order, until it closes."""

    server: MllpServer

    def handle(self) -> None:
        self.request.settimeout(IDLE_TIMEOUT_SECONDS)
        if isinstance(self.request, ssl.SSLSocket):
            try:  # here, not in accept(): a slow handshake must not hold up other engines
                self.request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.info("mllp tls handshake failed", extra={"reason": type(exc).__name__})
                return
        buffer = b""
        while True:
            try:
                chunk = self.request.recv(65536)
            except (TimeoutError, socket.timeout, OSError):
                return
            if not chunk:
                return
            buffer += chunk
            while True:
                start = buffer.find(START_BLOCK)
                if start < 0:
                    buffer = b""  # bytes outside a frame (keep-alives, noise) are dropped
                    break
                end = buffer.find(END_BLOCK, start)
                if end < 0:
                    buffer = buffer[start:]
                    if len(buffer) > MAX_FRAME_BYTES + 1:
                        log.info("mllp frame over 1 MiB, connection closed")
                        return
                    break
                frame, buffer = buffer[start + 1:end], buffer[end + len(END_BLOCK):]
                ack = ack_for(self.server.app, self.server.endpoint_name, frame)
                self.request.sendall(START_BLOCK + ack + END_BLOCK)


class MllpServer(socketserver.ThreadingTCPServer):
    """``serve_forever()`` answers engines; ``server_address`` holds the bound port."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, app: Flask, endpoint_name: str, host: str = "127.0.0.1",
                 port: int = 2575, tls: TlsFiles | None = None) -> None:
        check_bind(host, tls)
        self.app = app
        self.endpoint_name = endpoint_name
        self._tls = _tls_context(tls) if tls else None
        super().__init__((host, port), _Connection)

    def get_request(self):
        connection, address = super().get_request()
        if self._tls is not None:
            connection = self._tls.wrap_socket(connection, server_side=True,
                                               do_handshake_on_connect=False)
        return connection, address


def _tls_context(tls: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.certificate, tls.private_key)
    if tls.client_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(tls.client_ca)
    return context
