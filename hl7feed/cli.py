"""``flask certs add``: the certificates an EHR signs its HL7 messages with."""
from __future__ import annotations

import click
from flask.cli import AppGroup

from ehr import certificates
from ehr.services import EndpointError

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
