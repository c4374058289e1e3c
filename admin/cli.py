"""`flask admin ...`: admin accounts from the command line (the first one must be made here)."""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from admin.auth import hash_password, record
from admin.models import AdminRole, AdminUser
from extensions import db

MIN_PASSWORD_LENGTH = 12


@click.group("admin", help="Admin portal accounts.")
def admin_cli():
    pass


@admin_cli.command("create-user")
@click.argument("username")
@click.option("--role", type=click.Choice([r.value for r in AdminRole]), default="admin",
              show_default=True, help="admin configures; analyst approves endpoints.")
@click.option("--password", envvar="VV_ADMIN_PASSWORD", default=None,
              help="Default: asked for (or VV_ADMIN_PASSWORD). At least 12 characters.")
@click.option("--sso-only", is_flag=True, help="No password: signs in with the organization's SSO.")
@with_appcontext
def create_user(username: str, role: str, password: str | None, sso_only: bool):
    """Create an admin account."""
    username = username.strip()
    if not username:
        raise click.UsageError("the username is empty")
    if db.session.execute(db.select(AdminUser).filter_by(username=username)).first():
        raise click.ClickException(f"an account named {username!r} already exists")
    if not sso_only:
        if password is None:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        if len(password) < MIN_PASSWORD_LENGTH:
            raise click.ClickException(
                f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters")
    user = AdminUser(username=username, role=role,
                     password_hash=None if sso_only else hash_password(password))
    db.session.add(user)
    record("user.create", target=f"user:{username}", details={"role": role}, actor="cli")
    db.session.commit()
    click.echo(f"created {role} {username!r}")


@admin_cli.command("list-users")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@with_appcontext
def list_users(as_json: bool):
    """List admin accounts (never their passwords)."""
    users = db.session.execute(db.select(AdminUser).order_by(AdminUser.username)).scalars().all()
    rows = [{"username": u.username, "role": u.role, "sso": u.sso_subject is not None,
             "locked_until": u.locked_until.isoformat() if u.locked_until else None,
             "disabled": u.disabled} for u in users]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['username']:<24} {row['role']:<8}"
                   f"{' sso' if row['sso'] else ''}{' locked' if row['locked_until'] else ''}")
