"""``flask sms outbox`` and ``flask sms send-due``: read the texts, send what is due.

With the default outbox sender nothing leaves the server, so the outbox listing is how
the demo (and an admin on a test install) reads the texts, join links included.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
import sqlalchemy as sa
from flask.cli import AppGroup

import at_rest
from extensions import db
from notifications import sending
from notifications.models import BODY_PURPOSE, SmsMessage, SmsStatus
from visits.models import utcnow

sms_cli = AppGroup("sms", help="Text messages to patients and guests.")


def as_dict(row: SmsMessage) -> dict[str, Any]:
    """A text for listings, with its body decrypted (it holds the join link)."""
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {"id": row.id, "appointment_id": row.appointment_id, "kind": row.kind,
            "language": row.language, "status": row.status,
            "scheduled_for": iso(row.scheduled_for), "sent_at": iso(row.sent_at),
            "attempts": row.attempts, "next_attempt_at": iso(row.next_attempt_at),
            "error_code": row.error_code, "error": row.error_message,
            "provider_message_id": row.provider_message_id,
            "body": at_rest.decrypt(row.body_encrypted, BODY_PURPOSE)
            if row.body_encrypted else None}


@sms_cli.command("outbox")
@click.option("--status", type=click.Choice([s.value for s in SmsStatus]),
              help="Only texts in this state.")
@click.option("--appointment", "appointment_id", type=int, help="Only this appointment's texts.")
@click.option("--limit", type=int, default=200, show_default=True, help="Newest texts first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
def outbox_command(status: str | None, appointment_id: int | None, limit: int,
                   as_json: bool) -> None:
    """List texts, planned and sent, with their bodies. CAUTION: prints the join links,
    which let anyone join the visit; do not paste the output anywhere shared."""
    query = sa.select(SmsMessage).order_by(SmsMessage.scheduled_for.desc(),
                                           SmsMessage.id.desc()).limit(limit)
    if status:
        query = query.where(SmsMessage.status == status)
    if appointment_id is not None:
        query = query.where(SmsMessage.appointment_id == appointment_id)
    rows = [as_dict(row) for row in db.session.execute(query).scalars()]
    if as_json:
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not rows:
        click.echo("No texts" + (f" with status {status}." if status else "."))
    for row in rows:
        click.echo(f"#{row['id']}  appointment={row['appointment_id']}  {row['kind']}  "
                   f"{row['language']}  {row['status']}  scheduled={row['scheduled_for']}  "
                   f"sent={row['sent_at']}" + (f"  error={row['error']}" if row["error"] else ""))
        if row["body"]:
            click.echo(f"    {row['body']}")


@sms_cli.command("send-due")
def send_due_command() -> None:
    """Send the texts due now (one pass, as the background loop does) and say how many."""
    count = sending.send_due(utcnow())
    click.echo(f"Handled {count} due text{'s' if count != 1 else ''}.")
