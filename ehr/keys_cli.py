"""``flask keys rotate|list``: our private_key_jwt signing keys."""
from __future__ import annotations

import json
from datetime import timedelta

import click
from flask.cli import AppGroup

from ehr import keys

keys_cli = AppGroup("keys", help="Our signing keys for SMART private_key_jwt.")


@keys_cli.command("rotate")
@click.option("--alg", type=click.Choice(keys.ALGS), default=keys.DEFAULT_ALG, show_default=True,
              help="Signature algorithm of the new key.")
@click.option("--retire-after", type=float, default=keys.RETIRED_KEY_GRACE.total_seconds() / 3600,
              show_default=True, metavar="HOURS",
              help="Delete keys retired more than this many hours ago (they leave the JWKS).")
def rotate_command(alg: str, retire_after: float) -> None:
    """Create a new active key; the previous one is retired but stays published."""
    new = keys.rotate(alg, retire_after=timedelta(hours=retire_after))
    click.echo(f"Active key: {new.kid} ({new.alg}). Retired keys stay published for "
               f"{retire_after:g} h.")


@keys_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def list_command(as_json: bool) -> None:
    """Show every published key: kid, alg, created, active or retired."""
    listed = keys.list_keys()
    if as_json:
        click.echo(json.dumps([info.as_dict() for info in listed], indent=2))
        return
    if not listed:
        click.echo("No signing keys yet; one is made on first use (or run flask keys rotate).")
    for info in listed:
        state = f"retired {info.retired_at:%Y-%m-%d %H:%M}Z" if info.retired_at else "active"
        click.echo(f"{info.kid}  {info.alg}  created {info.created_at:%Y-%m-%d %H:%M}Z  {state}")
