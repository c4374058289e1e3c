"""``flask appointments list`` and ``flask links create``: look at visits, hand out links."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from extensions import db
from visits.links import create_join_link, default_expiry
from visits.models import Appointment, Participant

appointments_cli = AppGroup("appointments", help="Visits the app knows about.")
links_cli = AppGroup("links", help="Join links for participants.")


@appointments_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def list_command(as_json: bool) -> None:
    """Appointments with their participants (ids, roles, presence; no patient names)."""
    appointments = db.session.execute(
        sa.select(Appointment).order_by(Appointment.start_at)).scalars().all()
    listed = [{
        "id": a.id, "endpoint": a.endpoint.name, "ehr_appointment_id": a.ehr_appointment_id,
        "start": a.start_at.isoformat(), "end": a.end_at.isoformat(), "timezone": a.timezone,
        "status": a.status, "ended_at": a.ended_at.isoformat() if a.ended_at else None,
        "participants": [{"id": p.id, "role": p.role, "ehr_user_id": p.ehr_user_id,
                          "presence": p.presence} for p in a.participants],
    } for a in appointments]
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    if not listed:
        click.echo("No appointments yet: they arrive with a launch or an appointment message.")
    for a in listed:
        click.echo(f"{a['id']:>5}  {a['start']}  {a['status']:<10} {a['endpoint']}/"
                   f"{a['ehr_appointment_id']}  " + ", ".join(
                       f"{p['role']} #{p['id']} ({p['presence']})" for p in a["participants"]))


@links_cli.command("create")
@click.argument("participant_id", type=int)
@click.option("--hours", type=float, default=None,
              help="Valid for this many hours (default: until 2 hours after the visit ends).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON with the url and expiry.")
def create_command(participant_id: int, hours: float | None, as_json: bool) -> None:
    """Print a join link for PARTICIPANT_ID (see `flask appointments list`). The link is
    shown once: only its hash is stored."""
    participant = db.session.get(Participant, participant_id)
    if participant is None:
        raise click.ClickException(f"No participant {participant_id}; "
                                   "see `flask appointments list`.")
    appointment = participant.appointment
    if hours is not None:
        expires = datetime.now(timezone.utc) + timedelta(hours=hours)
    else:
        expires = default_expiry(appointment)
    token = create_join_link(participant, expires_at=expires)
    url = f"{current_app.config['PUBLIC_BASE_URL']}/j/{token}"
    if as_json:
        click.echo(json.dumps({"participant_id": participant.id, "url": url, "token": token,
                               "expires_at": expires.isoformat()}))
    else:
        click.echo(url)
        click.echo(f"Valid until {expires:%Y-%m-%d %H:%M} UTC. Shown once; keep it safe.",
                   err=True)
