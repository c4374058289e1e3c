"""``flask endpoints add|update|list|approve|frame-origins``: the EHRs (SMART ``iss``) we
accept launches from."""
from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from ehr import services
from ehr.models import Environment
from ehr.smart import DEFAULT_SCOPES

endpoints_cli = AppGroup("endpoints", help="EHR endpoints: add, update, list, approve, frame-origins.")


def _audit(action: str):
    """Record a CLI change in the audit log the admin portal shows (actor "cli")."""
    def record_change(change) -> None:
        from admin.auth import record

        endpoint = getattr(change, "endpoint", change)
        details = dict(getattr(change, "changed", {}) or {})
        if getattr(change, "approval_cleared", False):
            details["approval_cleared"] = True
        record(action, target=f"endpoint:{endpoint.name}", details=details, actor="cli")
    return record_change


_SETTINGS_OPTIONS = [
    click.option("--patient-client-id", default=None,
                 help="The client id of the patient-facing (MyChart) app, when the EHR "
                      "registered it apart from the clinicians' one; \"\" clears it."),
    click.option("--frame-ancestor", "frame_ancestors", multiple=True, metavar="ORIGIN",
                 help="An origin allowed to embed our pages (the EHR's web client); "
                      "repeatable."),
    click.option("--timezone", "site_timezone", default=None,
                 help="IANA time zone the clinic's times are shown in (default "
                      "America/Chicago)."),
    click.option("--phone-region", "default_phone_region", default=None, metavar="CC",
                 help="ISO country code for patient numbers written without one (default US)."),
    click.option("--link-valid-minutes", "link_valid_after_end_minutes", type=int, default=None,
                 help="How long join links work after the visit's end (default 120)."),
    click.option("--lobby-opens-minutes", "lobby_opens_before_minutes", type=int, default=None,
                 help="How early before the start the waiting room opens (default 30)."),
]


def _settings_options(command):
    for option in reversed(_SETTINGS_OPTIONS):
        command = option(command)
    return command


@endpoints_cli.command("add")
@click.argument("name")
@click.argument("fhir_base_url")
@click.option("--client-id", required=True, help="Our client id as registered in that EHR.")
@click.option("--environment", type=click.Choice([e.value for e in Environment]),
              default=Environment.TEST.value, show_default=True)
@click.option("--scopes", default=DEFAULT_SCOPES, show_default=True,
              help="Space-separated scopes to request at launch.")
@_settings_options
@click.option("--require-staff-sso/--no-require-staff-sso", default=False, show_default=True,
              help="Staff must sign in once with the organization's OpenID provider "
                   "(VV_STAFF_SSO_*) before their launches open a visit.")
def add_command(name: str, fhir_base_url: str, client_id: str, environment: str, scopes: str,
                patient_client_id: str | None, frame_ancestors: tuple[str, ...],
                site_timezone: str | None, default_phone_region: str | None,
                link_valid_after_end_minutes: int | None,
                lobby_opens_before_minutes: int | None, require_staff_sso: bool) -> None:
    """Register an EHR by NAME and FHIR_BASE_URL (its SMART iss). It cannot launch until
    someone runs `flask endpoints approve NAME --by WHO` (or an analyst approves it in
    the admin portal by signing in to that EHR)."""
    try:
        endpoint = services.add_endpoint(
            name, fhir_base_url, client_id=client_id, environment=environment, scopes=scopes,
            frame_ancestors=frame_ancestors, site_timezone=site_timezone,
            require_staff_sso=require_staff_sso, default_phone_region=default_phone_region,
            link_valid_after_end_minutes=link_valid_after_end_minutes,
            lobby_opens_before_minutes=lobby_opens_before_minutes,
            patient_client_id=patient_client_id, before_commit=_audit("endpoint.create"))
    except services.EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Added {endpoint.name!r} ({endpoint.environment}) for {endpoint.fhir_base_url}. "
               f"Approve it with: flask endpoints approve {endpoint.name} --by <your name>")


@endpoints_cli.command("update")
@click.argument("name")
@click.option("--fhir-base-url", default=None, help="A new FHIR base URL (SMART iss).")
@click.option("--client-id", default=None, help="Our client id as registered in that EHR.")
@click.option("--environment", type=click.Choice([e.value for e in Environment]), default=None)
@click.option("--scopes", default=None, help="Space-separated scopes to request at launch.")
@_settings_options
@click.option("--require-staff-sso/--no-require-staff-sso", default=None,
              help="Turn the staff sign-in requirement on or off (unchanged if not given).")
def update_command(name: str, fhir_base_url: str | None, client_id: str | None,
                   environment: str | None, scopes: str | None,
                   patient_client_id: str | None,
                   frame_ancestors: tuple[str, ...], site_timezone: str | None,
                   default_phone_region: str | None, link_valid_after_end_minutes: int | None,
                   lobby_opens_before_minutes: int | None,
                   require_staff_sso: bool | None) -> None:
    """Change the endpoint NAME (options not given stay as they are). Changing the FHIR
    base, a client id, scopes, environment or frame origins withdraws its approval."""
    try:
        change = services.update_endpoint(
            name, fhir_base_url=fhir_base_url, client_id=client_id, environment=environment,
            scopes=scopes, patient_client_id=patient_client_id, allowed_frame_ancestors=list(frame_ancestors) or None,
            site_timezone=site_timezone, default_phone_region=default_phone_region,
            link_valid_after_end_minutes=link_valid_after_end_minutes,
            lobby_opens_before_minutes=lobby_opens_before_minutes,
            require_staff_sso=require_staff_sso, before_commit=_audit("endpoint.update"))
    except services.EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    if not change.changed:
        click.echo(f"{name!r}: nothing to change.")
        return
    click.echo(f"{name!r}: changed {', '.join(sorted(change.changed))}.")
    if change.approval_cleared:
        click.echo(f"Its approval was withdrawn: approve it again with "
                   f"flask endpoints approve {name} --by <your name>")


@endpoints_cli.command("approve")
@click.argument("name")
@click.option("--by", "approved_by", required=True, help="Who approves (kept for the audit).")
@click.option("--require-staff-sso/--no-require-staff-sso", default=None,
              help="Turn the staff sign-in requirement on or off (unchanged if not given).")
def approve_command(name: str, approved_by: str, require_staff_sso: bool | None) -> None:
    """Allow launches from the endpoint NAME."""
    try:
        endpoint = services.approve_endpoint(name, by=approved_by,
                                             require_staff_sso=require_staff_sso,
                                             before_commit=_audit("endpoint.approve"))
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


@endpoints_cli.group("frame-origins")
def frame_origins_cli() -> None:
    """Origins allowed to show the launch and visit pages in a frame (CSP
    frame-ancestors), e.g. a web EHR's https://ehr.example.org. Any change withdraws the
    endpoint's approval, as `update --frame-ancestor` does: approve it again after."""


@frame_origins_cli.command("list")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def frame_origins_list(name: str, as_json: bool) -> None:
    """Show the origins allowed to frame the endpoint NAME's pages."""
    origins = _frame_origins(name)
    if as_json:
        click.echo(json.dumps(origins))
        return
    if not origins:
        click.echo(f"{name!r}: no frame origins; only our own pages may frame it.")
    for origin in origins:
        click.echo(origin)


@frame_origins_cli.command("add")
@click.argument("name")
@click.argument("origins", nargs=-1, required=True, metavar="ORIGIN...")
def frame_origins_add(name: str, origins: tuple[str, ...]) -> None:
    """Allow ORIGIN (https://host[:port], no path) to frame the endpoint NAME's pages."""
    _set_frame_origins(name, _frame_origins(name) + list(origins))


@frame_origins_cli.command("remove")
@click.argument("name")
@click.argument("origins", nargs=-1, required=True, metavar="ORIGIN...")
def frame_origins_remove(name: str, origins: tuple[str, ...]) -> None:
    """Stop ORIGIN from framing the endpoint NAME's pages."""
    current = _frame_origins(name)
    try:
        gone = {services.normalise_origin(origin) for origin in origins}
    except services.EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    unknown = sorted(gone - set(current))
    if unknown:
        raise click.ClickException(
            f"{name!r} does not allow {', '.join(unknown)}; its frame origins are: "
            f"{', '.join(current) or '(none)'}")
    _set_frame_origins(name, [origin for origin in current if origin not in gone])


@frame_origins_cli.command("clear")
@click.argument("name")
def frame_origins_clear(name: str) -> None:
    """Remove every frame origin of the endpoint NAME: only our own pages may frame it."""
    _set_frame_origins(name, [])


def _frame_origins(name: str) -> list[str]:
    endpoint = services.get_endpoint(name)
    if endpoint is None:
        raise click.ClickException(f"no endpoint named {name!r} (see `flask endpoints list`)")
    return list(endpoint.allowed_frame_ancestors or [])


def _set_frame_origins(name: str, origins: list[str]) -> None:
    try:
        change = services.update_endpoint(name, allowed_frame_ancestors=origins,
                                          before_commit=_audit("endpoint.update"))
    except services.EndpointError as exc:
        raise click.ClickException(str(exc)) from None
    now = change.endpoint.allowed_frame_ancestors or []
    if not change.changed:
        click.echo(f"{name!r}: frame origins unchanged ({', '.join(now) or 'none'}).")
        return
    click.echo(f"{name!r}: frame origins now {', '.join(now) or 'none (only our own pages)'}.")
    if change.approval_cleared:
        click.echo(f"Its approval was withdrawn: approve it again with "
                   f"flask endpoints approve {name} --by <your name>")
