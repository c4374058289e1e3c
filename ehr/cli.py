"""``flask endpoints add|list|approve``: the EHRs (SMART ``iss``) we accept launches from."""
from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from ehr import services
from ehr.models import Environment
from ehr.smart import DEFAULT_SCOPES

endpoints_cli = AppGroup("endpoints", help="EHR endpoints: add, list, approve.")


@endpoints_cli.command("add")
@click.argument("name")
@click.argument("fhir_base_url")
@click.option("--client-id", required=True, help="Our client id as registered in that EHR.")
@click.option("--environment", type=click.Choice([e.value for e in Environment]),
              default=Environment.TEST.value, show_default=True)
@click.option("--scopes", default=DEFAULT_SCOPES, show_default=True,
              help="Space-separated scopes to request at launch.")
@click.option("--frame-ancestor", "frame_ancestors", multiple=True, metavar="ORIGIN",
              help="An origin allowed to embed our pages (the EHR's web client); repeatable.")
@click.option("--timezone", "site_timezone", default=None,
              help="IANA time zone the clinic's times are shown in (default America/Chicago).")
@click.option("--require-staff-sso/--no-require-staff-sso", default=False, show_default=True,
              help="Staff must sign in once with the organization's OpenID provider "
                   "(VV_STAFF_SSO_*) before their launches open a visit.")
def add_command(name: str, fhir_base_url: str, client_id: str, environment: str, scopes: str,
                frame_ancestors: tuple[str, ...], site_timezone: str | None,
                require_staff_sso: bool) -> None:
    """Register an EHR by NAME and FHIR_BASE_URL (its SMART iss). It cannot launch until
    someone runs `flask endpoints approve NAME --by WHO`."""
    try:
        endpoint = services.add_endpoint(
            name, fhir_base_url, client_id=client_id, environment=environment, scopes=scopes,
            frame_ancestors=frame_ancestors, site_timezone=site_timezone,
            require_staff_sso=require_staff_sso)
    except services.EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Added {endpoint.name!r} ({endpoint.environment}) for {endpoint.fhir_base_url}. "
               f"Approve it with: flask endpoints approve {endpoint.name} --by <your name>")


@endpoints_cli.command("approve")
@click.argument("name")
@click.option("--by", "approved_by", required=True, help="Who approves (kept for the audit).")
@click.option("--require-staff-sso/--no-require-staff-sso", default=None,
              help="Turn the staff sign-in requirement on or off (unchanged if not given).")
def approve_command(name: str, approved_by: str, require_staff_sso: bool | None) -> None:
    """Allow launches from the endpoint NAME."""
    try:
        endpoint = services.approve_endpoint(name, by=approved_by,
                                             require_staff_sso=require_staff_sso)
    except services.EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{endpoint.name!r} approved by {endpoint.approved_by} at "
               f"{endpoint.approved_at:%Y-%m-%d %H:%M}Z; staff sign-in "
               f"{'required' if endpoint.require_staff_sso else 'not required'}.")


@endpoints_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def list_command(as_json: bool) -> None:
    """Show every endpoint: name, environment, FHIR base, approval."""
    listed = [services.endpoint_summary(e) for e in services.list_endpoints()]
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        click.echo("No EHR endpoints yet: flask endpoints add NAME FHIR_BASE_URL --client-id ID")
    for item in listed:
        approval = (f"approved by {item['approved_by']}" if item["approved"]
                    else "NOT APPROVED")
        sso = "  staff sign-in required" if item["require_staff_sso"] else ""
        click.echo(f"{item['name']}  {item['environment']}  {item['fhir_base_url']}  "
                   f"client {item['client_id']}  {approval}{sso}")
