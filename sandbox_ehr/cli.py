"""``flask demo`` and ``flask sandbox seed``: the only ways the sandbox gets its data.

Building the app writes nothing (``sandbox_ehr.init_app``), so these commands are where
the sandbox's tables, today's clinic and our client registration come from.
"""
from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from sandbox_ehr.common import fhir_base, public_base

sandbox_cli = AppGroup("sandbox", help="The built-in sandbox EHR (VV_SANDBOX=1 only).")


def _require_sandbox(command: str) -> None:
    if not current_app.config.get("SANDBOX"):
        click.echo(f"The sandbox EHR is off: set VV_SANDBOX=1 and run flask {command} again.",
                   err=True)
        raise click.exceptions.Exit(1)


@sandbox_cli.command("seed")
def sandbox_seed_command() -> None:
    """Seed the sandbox EHR: create its tables if missing, upsert today's clinic (3
    practitioners, 6 patients, 6 video visits, moved to today) and register this app as
    its SMART client with VV_PUBLIC_BASE_URL's redirect URIs. Safe to run again. The
    app's own visits are left as they are; `flask demo` also starts them afresh."""
    _require_sandbox("sandbox seed")
    from sandbox_ehr.seed import seed

    summary = seed()
    click.echo(f"Sandbox clinic seeded for {summary.day.isoformat()} ({summary.timezone}): "
               f"{summary.appointments} appointments, {summary.patients} patients, "
               f"{summary.practitioners} practitioners; {summary.changed} resources changed.")
    from sandbox_ehr.clients import APP_CLIENT_ID

    click.echo(f"SMART client {APP_CLIENT_ID!r} registered for {public_base()}")


@click.command("demo")
@with_appcontext
def demo_command() -> None:
    """Start the demo clinic afresh and print the URLs to open: seed the sandbox EHR
    (`flask sandbox seed`), forget the visits of earlier demo runs (so ended visits are
    open again and new links work), register the sandbox as the approved EHR endpoint
    `sandbox` with its HL7 signing certificate, and make the demo admin accounts."""
    _require_sandbox("demo")
    from sandbox_ehr.seed import seed

    summary = seed()
    endpoint = _register_with_app()
    cleared = _fresh_clinic(endpoint)
    from sandbox_ehr.hl7_sender import ensure_signing_certificate

    certificate = ensure_signing_certificate(endpoint.name)
    click.echo(f"Sandbox clinic seeded for {summary.day.isoformat()} ({summary.timezone}): "
               f"{summary.appointments} appointments, {summary.patients} patients, "
               f"{summary.practitioners} practitioners.")
    if cleared:
        click.echo(f"Earlier demo visits cleared: {cleared} (a fresh clinic day).")
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


def _fresh_clinic(endpoint) -> int:
    """Forget earlier demo runs as a new clinic day would: the app's visits from the
    sandbox (their participants, links, presence, lobby and texts go with them), the
    write-backs queued for the sandbox, and what the app wrote into the sandbox EHR.
    The write-backs must go too: they are idempotent by ids that SQLite hands out again
    after a delete (``visit-ended/ended-<id>``), so a kept one would stand in for the new
    visit's. Returns how many visits were removed."""
    import sqlalchemy as sa

    from ehr.models import WritebackOutbox
    from extensions import db
    from sandbox_ehr.models import SandboxResource
    from sandbox_ehr.store import CREATE_TYPES
    from visits.models import Appointment

    removed = db.session.execute(
        sa.delete(Appointment).where(Appointment.endpoint_id == endpoint.id)).rowcount
    db.session.execute(
        sa.delete(WritebackOutbox).where(WritebackOutbox.endpoint_id == endpoint.id))
    db.session.execute(sa.delete(SandboxResource).where(SandboxResource.type.in_(CREATE_TYPES)))
    db.session.commit()
    return removed


def _register_with_app():
    """Make the sandbox a known, approved EHR of this app, as an admin would for a real one."""
    from ehr.services import ensure_endpoint
    from sandbox_ehr.clients import APP_CLIENT_ID

    return ensure_endpoint(
        "sandbox", fhir_base(), client_id=APP_CLIENT_ID,
        scopes="launch openid fhirUser user/*.rs user/AuditEvent.c user/Observation.c",
        approved_by="flask demo", site_timezone=current_app.config["SANDBOX_TIMEZONE"])
