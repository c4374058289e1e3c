"""``flask certs add`` (the certificates an EHR signs its HL7 messages with) and
``flask hl7 mllp`` (the MLLP listener for interface engines that do not speak HTTPS)."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from ehr.services import EndpointError
from hl7feed import certificates
from hl7feed.mllp import MllpRefused, MllpServer, TlsFiles

certs_cli = AppGroup("certs", help="HL7 signing certificates per EHR endpoint.")


@certs_cli.command("add")
@click.argument("endpoint")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
def add_command(endpoint: str, files: tuple[str, ...]) -> None:
    """Add the PEM or DER certificate FILES to ENDPOINT; several at once for rotation.
    Nothing is added if one file is refused (expired, a private key, not RSA or EC)."""
    contents = []
    for path in files:
        with open(path, "rb") as handle:
            contents.append((path, handle.read()))
    try:
        added = certificates.add_certificates(endpoint, contents)
    except (certificates.CertificateRefused, EndpointError) as exc:
        raise click.ClickException(str(exc)) from None
    for item in added:
        state = "already present" if item.already_present else "added"
        click.echo(f"{state}: {item.subject} sha256={item.fingerprint_sha256} "
                   f"valid until {item.not_after}")


@click.group("hl7", help="HL7 v2 feeds.")
def hl7_cli():
    pass


@hl7_cli.command("mllp")
@click.argument("endpoint")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --tls-cert/--tls-key.")
@click.option("--port", default=2575, show_default=True, type=click.IntRange(0, 65535))
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False),
              help="PEM certificate (chain) for TLS.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False),
              help="PEM private key of that certificate.")
@click.option("--tls-client-ca", type=click.Path(exists=True, dir_okay=False),
              help="Require client certificates signed by this CA bundle (mutual TLS).")
@with_appcontext
def mllp(endpoint: str, host: str, port: int, tls_cert: str | None, tls_key: str | None,
         tls_client_ca: str | None):
    """Receive SIU messages for ENDPOINT over MLLP (0x0B ... 0x1C 0x0D), one ACK per message
    on the same connection. Same intake as POST /hl7/v2/ENDPOINT, without the signature."""
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("give both --tls-cert and --tls-key, or neither")
    if tls_client_ca and not tls_cert:
        raise click.UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    tls = TlsFiles(tls_cert, tls_key, tls_client_ca) if tls_cert else None
    try:
        server = MllpServer(current_app._get_current_object(), endpoint, host, port, tls)
    except MllpRefused as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound_host, bound_port = server.server_address[:2]
    click.echo(f"MLLP listener for {endpoint!r} on {bound_host}:{bound_port}"
               f"{' (TLS)' if tls else ''}; Ctrl-C stops it.")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
