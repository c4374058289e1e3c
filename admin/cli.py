"""`flask admin ...`: admin accounts from the command line (the first one must be made here)."""
from __future__ import annotations

import json

import click
from flask.cli import with_appcontext

from admin.auth import hash_password, record
from admin.models import AdminRole, AdminUser
from extensions import db
from visits.models import utcnow

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
@click.option("--sso-subject", default=None,
              help="The organization provider's `sub` for this person: lets them sign in "
                   "with 'Sign in with your organization'.")
@click.option("--sso-only", is_flag=True,
              help="No password: signs in only with the organization's SSO (needs "
                   "--sso-subject).")
@with_appcontext
def create_user(username: str, role: str, password: str | None, sso_subject: str | None,
                sso_only: bool):
    """Create an admin account (the password is stored as an argon2id hash)."""
    username = username.strip()
    sso_subject = (sso_subject or "").strip() or None
    if not username:
        raise click.UsageError("the username is empty")
    if sso_only and not sso_subject:
        raise click.UsageError("--sso-only needs --sso-subject, or nobody could sign in")
    if db.session.execute(db.select(AdminUser).filter_by(username=username)).first():
        raise click.ClickException(f"an account named {username!r} already exists")
    _check_subject_free(sso_subject)
    if not sso_only:
        if password is None:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        _check_password(password)
    user = AdminUser(username=username, role=role, sso_subject=sso_subject,
                     password_hash=None if sso_only else hash_password(password))
    db.session.add(user)
    record("user.create", target=f"user:{username}",
           details={"role": role, "sso": sso_subject is not None, "local_sign_in": not sso_only},
           actor="cli")
    db.session.commit()
    click.echo(f"created {role} {username!r}")


@admin_cli.command("link-sso")
@click.argument("username")
@click.argument("subject")
@with_appcontext
def link_sso(username: str, subject: str):
    """Link an account to the organization provider's SUBJECT (`sub`) for SSO sign-in."""
    user = _user(username)
    subject = subject.strip()
    if not subject:
        raise click.UsageError("the subject is empty")
    _check_subject_free(subject, but=user)
    user.sso_subject = subject
    record("user.link_sso", target=f"user:{user.username}", actor="cli")
    db.session.commit()
    click.echo(f"linked {user.username!r} to the SSO subject")


@admin_cli.command("unlock")
@click.argument("username")
@with_appcontext
def unlock(username: str):
    """Lift a lockout after too many wrong passwords."""
    user = _user(username)
    user.locked_until = None
    user.failed_logins = 0
    record("user.unlock", target=f"user:{user.username}", actor="cli")
    db.session.commit()
    click.echo(f"unlocked {user.username!r}")


def _user(username: str) -> AdminUser:
    user = db.session.execute(
        db.select(AdminUser).filter_by(username=username.strip())).scalar_one_or_none()
    if user is None:
        raise click.ClickException(f"no account named {username!r}")
    return user


def _check_subject_free(subject: str | None, but: AdminUser | None = None) -> None:
    if subject is None:
        return
    owner = db.session.execute(
        db.select(AdminUser).filter_by(sso_subject=subject)).scalar_one_or_none()
    if owner is not None and owner is not but:
        raise click.ClickException(f"that SSO subject is already linked to {owner.username!r}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(
            f"the password is too short: use at least {MIN_PASSWORD_LENGTH} characters")


@admin_cli.command("list-users")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@with_appcontext
def list_users(as_json: bool):
    """List admin accounts (never their passwords)."""
    users = db.session.execute(db.select(AdminUser).order_by(AdminUser.username)).scalars().all()
    now = utcnow()
    rows = [{"username": u.username, "role": u.role, "sso": u.sso_subject is not None,
             "locked_until": u.locked_until.isoformat()
             if u.locked_until and u.locked_until > now else None,
             "disabled": u.disabled} for u in users]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        click.echo(f"{row['username']:<24} {row['role']:<8}"
                   f"{' sso' if row['sso'] else ''}{' locked' if row['locked_until'] else ''}")
