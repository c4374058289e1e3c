"""``flask demo``: seed the sandbox clinic for today and say where to click."""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import with_appcontext

from sandbox_ehr.common import fhir_base, public_base


@click.command("demo")
@with_appcontext
def demo_command() -> None:
    """Seed the sandbox EHR with today's appointments and print the URLs to open."""
    if not current_app.config.get("SANDBOX"):
        click.echo("The sandbox EHR is off: set VV_SANDBOX=1 and run flask demo again.", err=True)
        raise click.exceptions.Exit(1)
    from sandbox_ehr.seed import seed

    summary = seed()
    endpoint = _register_with_app()
    from sandbox_ehr.hl7_sender import ensure_signing_certificate

    certificate = ensure_signing_certificate(endpoint.name)
    click.echo(f"Sandbox clinic seeded for {summary.day.isoformat()} ({summary.timezone}): "
               f"{summary.appointments} appointments, {summary.patients} patients, "
               f"{summary.practitioners} practitioners.")
    click.echo(f"Clinic schedule:      {public_base()}/sandbox")
    click.echo(f"FHIR base (iss):      {fhir_base()}")
    click.echo(f"SMART configuration:  {fhir_base()}/.well-known/smart-configuration")
    click.echo(f"EHR endpoint in app:  {endpoint.name!r} (approved for the demo)")
    state = "uploaded" if certificate.uploaded else "already trusted"
    click.echo(f"HL7 signing cert:     sha256={certificate.fingerprint_sha256[:16]}... "
               f"({state}, valid until {certificate.not_after:%Y-%m-%d})")
    click.echo(f"HL7 intake:           {public_base()}/hl7/v2/{endpoint.name}")
    click.echo(f"Health:               {public_base()}/healthz")
    for username, role, created in _demo_admins():
        note = "created" if created else "exists"
        click.echo(f"Admin portal:         {public_base()}/admin  {role} {username!r} "
                   f"password {DEMO_ADMIN_PASSWORD!r} ({note})")


# The demo's admin accounts share one well-known password: a sandbox install refuses to
# start in production (settings.check), so these never guard real data.
DEMO_ADMIN_PASSWORD = "virtual-visits-demo"
DEMO_ADMINS = (("demo-admin", "admin"), ("demo-analyst", "analyst"))


def _demo_admins() -> list[tuple[str, str, bool]]:
    """An admin and an analyst to try the portal with; existing accounts are left alone."""
    from admin.auth import hash_password, record
    from admin.models import AdminUser
    from extensions import db

    result = []
    for username, role in DEMO_ADMINS:
        exists = db.session.execute(db.select(AdminUser.id).filter_by(username=username)).first()
        if not exists:
            db.session.add(AdminUser(username=username, role=role,
                                     password_hash=hash_password(DEMO_ADMIN_PASSWORD)))
            record("user.create", target=f"user:{username}", details={"role": role},
                   actor="flask demo")
        result.append((username, role, not exists))
    db.session.commit()
    return result


def _register_with_app():
    """Make the sandbox a known, approved EHR of this app, as an admin would for a real one."""
    from ehr.services import ensure_endpoint
    from sandbox_ehr.clients import APP_CLIENT_ID

    return ensure_endpoint(
        "sandbox", fhir_base(), client_id=APP_CLIENT_ID,
        scopes="launch openid fhirUser user/*.rs user/AuditEvent.c user/Observation.c",
        approved_by="flask demo", site_timezone=current_app.config["SANDBOX_TIMEZONE"])
