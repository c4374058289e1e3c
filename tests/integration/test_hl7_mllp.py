"""`flask hl7 mllp`: HL7 over MLLP on a real TCP socket, one ACK per frame, in order."""
from __future__ import annotations

import socket
import ssl
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from extensions import db
from hl7feed.mllp import END_BLOCK, START_BLOCK, MllpRefused, MllpServer, TlsFiles
from tests import factories
from visits.models import Appointment

DATA = Path(__file__).resolve().parent.parent / "data" / "hl7"
S12 = (DATA / "siu_s12_rethinkhealth_epiclike_v251.hl7").read_bytes()
S15 = (DATA / "siu_s15_renalware_v24.hl7").read_bytes()


@pytest.fixture
def listener(app):
    """An approved endpoint and an MLLP listener for it on a free loopback port."""
    with app.app_context():
        factories.make_endpoint("epic-mllp")
    servers = []

    def start(tls: TlsFiles | None = None, host: str = "127.0.0.1") -> MllpServer:
        server = MllpServer(app, "epic-mllp", host, 0, tls)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def _frames(connection: socket.socket, count: int) -> list[str]:
    """Read ``count`` ACK frames off the connection."""
    buffer, frames = b"", []
    while len(frames) < count:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed after {len(frames)} of {count} ACKs"
        buffer += chunk
        while END_BLOCK in buffer:
            frame, buffer = buffer.split(END_BLOCK, 1)
            assert frame.startswith(START_BLOCK)
            frames.append(frame[1:].decode())
    return frames


def _msa(ack: str) -> list[str]:
    separator = ack[3]
    return next(s for s in ack.split("\r") if s.startswith("MSA")).split(separator)


def _frame(message: bytes) -> bytes:
    return START_BLOCK + message + END_BLOCK


def test_two_messages_on_one_connection_get_two_acks_in_order(app, listener):
    server = listener()
    with socket.create_connection(server.server_address[:2], timeout=10) as connection:
        # Noise between frames, and the second frame split across two writes.
        connection.sendall(_frame(S12) + b"\r\n" + _frame(S15)[:40])
        connection.sendall(_frame(S15)[40:])
        first, second = _frames(connection, 2)

    assert _msa(first)[1:3] == ["AA", _control_id(S12)]
    assert _msa(second)[1:3] == ["AA", _control_id(S15)]
    with app.app_context():
        assert db.session.execute(db.select(db.func.count()).select_from(Appointment)
                                  ).scalar_one() == 2


def test_a_resent_message_is_acknowledged_and_applied_once(app, listener):
    server = listener()
    with socket.create_connection(server.server_address[:2], timeout=10) as connection:
        connection.sendall(_frame(S12) + _frame(S12))
        first, second = _frames(connection, 2)

    assert _msa(first)[1] == _msa(second)[1] == "AA"
    with app.app_context():
        assert db.session.execute(db.select(db.func.count()).select_from(Appointment)
                                  ).scalar_one() == 1


def test_garbage_and_truncated_frames_are_answered_not_dropped(listener):
    server = listener()
    truncated = S12.split(b"\r")[0] + b"\rSCH|"  # MSH and a cut-off SCH
    with socket.create_connection(server.server_address[:2], timeout=10) as connection:
        connection.sendall(_frame(b"not hl7 at all") + _frame(truncated) + _frame(S15))
        garbage, cut, good = _frames(connection, 3)

    assert _msa(garbage)[1] == "AR"
    assert _msa(cut)[1] == "AE" and "\rERR" in cut
    assert _msa(good)[1] == "AA"


def test_without_tls_only_loopback_is_allowed(app):
    with pytest.raises(MllpRefused, match="without TLS"):
        MllpServer(app, "epic-mllp", "0.0.0.0", 0)


def test_with_tls_it_listens_and_answers_over_tls(app, listener, tmp_path):
    certificate, key = _self_signed(tmp_path)
    server = listener(TlsFiles(str(certificate), str(key)))
    context = ssl.create_default_context(cafile=str(certificate))
    with socket.create_connection(server.server_address[:2], timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as connection:
        connection.sendall(_frame(S12))
        [ack] = _frames(connection, 1)

    assert _msa(ack)[1] == "AA"


def test_cli_refuses_a_network_address_without_tls(runner):
    result = runner.invoke(args=["hl7", "mllp", "epic-mllp", "--host", "0.0.0.0"])

    assert result.exit_code != 0
    assert "refusing to listen on 0.0.0.0 without TLS" in result.output


def _control_id(message: bytes) -> str:
    msh = message.split(b"\r")[0].decode()
    return msh.split(msh[3])[9]


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=5))
                   .not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
                                  critical=False)
                   .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "mllp.pem", folder / "mllp.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
