"""Made-up visits for developing and measuring the reports (``flask reports sample-data``):
appointments with a patient and a provider, lobby waits, device tests, call-quality samples
(summed into the quality rollups by ``visits.quality.rollups_from_samples``) and
texts, spread over the clinic's hours of the last days.

Development and the sandbox only: production refuses (``refusal``). Rows are written in
bulk, with their ids chosen here: PostgreSQL's ``COPY`` (then the id sequences are moved
past them), SQLite's ``executemany``. No row holds anything about a real person: patients
are ``Patient/sample-…`` ids with no name, no phone and no recipient row.
"""
from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from device_test.models import DeviceTestResult
from ehr.models import EhrEndpoint
from ehr.services import ensure_endpoint
from extensions import db
from notifications.models import SmsMessage
from reports import texts
from visits import quality
from visits.models import (
    Appointment,
    CallQualitySample,
    LobbyEntry,
    Participant,
    utcnow,
)

DEPARTMENTS = ("Cardiology", "Dermatology", "Family Medicine", "Pediatrics", "Psychiatry",
               "Endocrinology", "Neurology", "Oncology")
BROWSERS = (("Chrome", "Windows"), ("Safari", "iOS"), ("Chrome", "Android"), ("Edge", "Windows"),
            ("Safari", "macOS"), ("Firefox", "Linux"))
CHUNK = 20_000
# Tables in the order their rows are written: parents before the rows that refer to them.
_ORDER = ["appointments", "participants", "lobby_entries", "device_test_results",
          "call_quality_samples", "sms_messages"]


class Refused(Exception):
    """Sample data would mix with real visits."""


def refusal(config) -> str | None:
    """Why this installation may not get sample data, or None: production never does (real
    patients' visits and reports would include made-up ones)."""
    if config.get("ENV") == "production":
        return ("refusing to add sample data in production (VV_ENV=production): the "
                "reports would count made-up visits; use a development or sandbox database")
    return None


@dataclass
class Counts:
    """How many rows of each kind were written."""

    appointments: int = 0
    participants: int = 0
    lobby_entries: int = 0
    device_tests: int = 0
    quality_samples: int = 0
    quality_rollups: int = 0
    texts: int = 0
    seconds: float = 0.0
    by_table: dict[str, int] = field(default_factory=dict)


def _next_ids(table: sa.Table) -> int:
    return (db.session.execute(sa.select(sa.func.max(table.c.id))).scalar() or 0) + 1


def _sample_endpoints() -> list[EhrEndpoint]:
    """Every endpoint; two sample clinics (Chicago and New York) when there are none."""
    found = list(db.session.execute(sa.select(EhrEndpoint).order_by(EhrEndpoint.id)).scalars())
    if found:
        return found
    ensure_endpoint("sample-chicago", "https://sample-chicago.example.org/fhir",
                    client_id="sample", scopes="launch", approved_by="sample-data",
                    site_timezone="America/Chicago")
    ensure_endpoint("sample-new-york", "https://sample-new-york.example.org/fhir",
                    client_id="sample", scopes="launch", approved_by="sample-data",
                    site_timezone="America/New_York")
    db.session.commit()
    return list(db.session.execute(sa.select(EhrEndpoint).order_by(EhrEndpoint.id)).scalars())


class _Writer:
    """Rows per table, flushed in chunks: COPY on PostgreSQL, executemany elsewhere."""

    def __init__(self, connection: sa.Connection) -> None:
        self.connection = connection
        self.postgres = connection.dialect.name == "postgresql"
        self.pending: dict[str, tuple[sa.Table, tuple[str, ...], list[tuple]]] = {}
        self.written: dict[str, int] = {}

    def add(self, table: sa.Table, columns: tuple[str, ...], row: tuple) -> None:
        entry = self.pending.setdefault(table.name, (table, columns, []))
        entry[2].append(row)
        if len(entry[2]) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        """Every table's rows, parents first (foreign keys)."""
        for key in sorted(self.pending, key=_ORDER.index):
            table, columns, rows = self.pending[key]
            if not rows:
                continue
            if self.postgres:
                cursor = self.connection.connection.driver_connection.cursor()
                with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row([json.dumps(v) if isinstance(v, dict) else v
                                        for v in row])
            else:
                self.connection.execute(table.insert(), [dict(zip(columns, row)) for row in rows])
            self.written[key] = self.written.get(key, 0) + len(rows)
            rows.clear()

    def fix_sequences(self) -> None:
        """Ids were chosen here: move PostgreSQL's sequences past them."""
        if not self.postgres:
            return
        for table, _columns, _rows in self.pending.values():
            if "id" in table.c:
                self.connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                    f"(SELECT COALESCE(MAX(id), 1) FROM {table.name}))")


def _slots(zone: ZoneInfo, first: date, days: int, rng: random.Random) -> Callable[[], datetime]:
    """A random 15-minute slot between 08:00 and 17:00 clinic time on one of the days."""
    def pick() -> datetime:
        day = first + timedelta(days=rng.randrange(days))
        minute = 8 * 60 + 15 * rng.randrange(36)
        return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=zone)
    return pick


def _lognormal_seconds(rng: random.Random, median: float, spread: float) -> float:
    return median * math.exp(rng.gauss(0, spread))


def generate(visits: int, now: datetime, *, days: int = 365, samples_per_visit: int = 20,
             seed: int = 12, progress: Callable[[int], None] | None = None) -> Counts:
    """Add ``visits`` made-up visits scheduled over the ``days`` before ``now`` (and a week
    after), with ``samples_per_visit`` call-quality samples per call on average; returns
    how many rows were written. Refuses nothing itself: callers check ``refusal``."""
    started = datetime.now()
    rng = random.Random(seed)
    endpoints = _sample_endpoints()
    zones = {e.id: ZoneInfo(e.site_timezone or "UTC") for e in endpoints}
    providers = [(f"Practitioner/sample-{n}", f"Dr. Sample {n}") for n in range(1, 201)]
    tables = {name: model.__table__ for name, model in (
        ("appointments", Appointment), ("participants", Participant),
        ("lobby_entries", LobbyEntry), ("device_test_results", DeviceTestResult),
        ("call_quality_samples", CallQualitySample),
        ("sms_messages", SmsMessage))}
    ids = {name: _next_ids(table) for name, table in tables.items() if "id" in table.c}
    connection = db.session.connection()
    writer = _Writer(connection)
    pickers = {e.id: _slots(zones[e.id], (now - timedelta(days=days)).astimezone(
        zones[e.id]).date(), days + 7, rng) for e in endpoints}
    for number, row in enumerate(_visits(visits, now, rng, endpoints, pickers, providers,
                                         samples_per_visit, ids), start=1):
        for name, columns, values in row:
            writer.add(tables[name], columns, values)
        if progress and number % 50_000 == 0:
            progress(number)
    writer.flush()
    writer.fix_sequences()
    db.session.commit()
    # The call-quality report reads rollups summed as samples arrive; samples written in
    # bulk are summed afterwards. The texts report counts settled days once, in the
    # background; counting them now gives the report its real shape at once.
    rollups = quality.rollups_from_samples() if samples_per_visit else 0
    texts.settle(utcnow())
    written = writer.written
    return Counts(appointments=written.get("appointments", 0),
                  participants=written.get("participants", 0),
                  lobby_entries=written.get("lobby_entries", 0),
                  device_tests=written.get("device_test_results", 0),
                  quality_samples=written.get("call_quality_samples", 0),
                  quality_rollups=rollups or 0,
                  texts=written.get("sms_messages", 0),
                  seconds=(datetime.now() - started).total_seconds(), by_table=dict(written))


APPOINTMENT_COLUMNS = ("id", "endpoint_id", "ehr_appointment_id", "start_at", "end_at",
                       "timezone", "department_display", "status", "ended_at", "created_at",
                       "updated_at")
PARTICIPANT_COLUMNS = ("id", "appointment_id", "role", "ehr_user_id", "display_name",
                       "language", "join_route", "admitted_at", "left_at", "presence",
                       "presence_since", "created_at")
LOBBY_COLUMNS = ("id", "participant_id", "entered_at", "admitted_at",
                 "admitted_by_participant_id", "left_at")
TEST_COLUMNS = ("id", "appointment_id", "participant_id", "created_at", "overall", "checks",
                "user_agent_summary")
SAMPLE_COLUMNS = ("id", "participant_id", "at", "rtt_ms", "jitter_ms", "packet_loss_pct",
                  "bitrate_in_kbps", "bitrate_out_kbps", "mos", "relayed", "browser_family",
                  "os_family")
TEXT_COLUMNS = ("id", "appointment_id", "participant_id", "kind", "language", "scheduled_for",
                "status", "sent_at", "status_updated_at", "error_code", "error_message",
                "attempts", "created_at")


def _visits(count: int, now: datetime, rng: random.Random, endpoints: list[EhrEndpoint],
            pickers: dict, providers: list, samples_per_visit: int,
            ids: dict[str, int]) -> Iterator[list[tuple[str, tuple[str, ...], tuple]]]:
    """Rows for one visit at a time: (table name, columns, values)."""
    json_checks = {"camera": {"status": "pass"}, "microphone": {"status": "pass"}}
    for _n in range(count):
        endpoint = endpoints[rng.randrange(len(endpoints))]
        start = pickers[endpoint.id]().astimezone(ZoneInfo("UTC"))
        end = start + timedelta(minutes=rng.choice((15, 20, 30, 30, 45)))
        appointment_id = ids["appointments"]
        ids["appointments"] += 1
        over = end <= now
        roll = rng.random()
        cancelled = roll < 0.05
        outcome = ("cancelled" if cancelled else "no_show" if roll < 0.13 else
                   "left" if roll < 0.17 else "no_provider" if roll < 0.19 else "completed")
        if not over and outcome != "cancelled":
            outcome = "future"
        rows: list[tuple[str, tuple[str, ...], tuple]] = []
        provider_id = ids["participants"]
        patient_id = provider_id + 1
        ids["participants"] += 2
        ehr_provider, provider_name = providers[rng.randrange(len(providers))]
        route = rng.choices(("sms", "mychart", None), (60, 35, 5))[0]
        language = rng.choices(("en", "es", "pt-BR", None), (70, 20, 5, 5))[0]
        joined = outcome in ("completed", "left", "no_provider")
        provider_came = outcome in ("completed", "no_show", "left")
        entered = start + timedelta(seconds=rng.uniform(-600, 420)) if joined else None
        admitted = ended = left = None
        if outcome == "completed":
            admitted = entered + timedelta(seconds=_lognormal_seconds(rng, 240, 0.9))
            ended = admitted + timedelta(seconds=_lognormal_seconds(rng, 15 * 60, 0.4))
        elif joined:
            left = entered + timedelta(seconds=_lognormal_seconds(rng, 600, 0.6))
        status = ("cancelled" if cancelled else "fulfilled" if ended else
                  "noshow" if outcome == "no_show" and rng.random() < 0.5 else "booked")
        rows.append(("appointments", APPOINTMENT_COLUMNS, (
            appointment_id, endpoint.id, f"sample-{appointment_id}", start, end,
            endpoint.site_timezone, DEPARTMENTS[rng.randrange(len(DEPARTMENTS))], status, ended,
            start - timedelta(days=7), start - timedelta(days=7))))
        rows.append(("participants", PARTICIPANT_COLUMNS, (
            provider_id, appointment_id, "provider", ehr_provider, provider_name, None, None,
            None, None, "disconnected" if provider_came else "never",
            start if provider_came else None, start - timedelta(days=7))))
        rows.append(("participants", PARTICIPANT_COLUMNS, (
            patient_id, appointment_id, "patient", f"Patient/sample-{appointment_id}", None,
            language, route if joined else None, admitted, left or ended,
            "disconnected" if joined else "never", entered, start - timedelta(days=7))))
        if joined:
            rows.append(("lobby_entries", LOBBY_COLUMNS, (
                ids["lobby_entries"], patient_id, entered, admitted,
                provider_id if admitted else None, None if admitted else left)))
            ids["lobby_entries"] += 1
            if rng.random() < 0.4:
                overall = rng.choices(("pass", "warn", "fail"), (80, 12, 8))[0]
                rows.append(("device_test_results", TEST_COLUMNS, (
                    ids["device_test_results"], appointment_id, patient_id,
                    entered - timedelta(minutes=rng.uniform(1, 120)), overall, json_checks,
                    "Chrome 131 / Windows")))
                ids["device_test_results"] += 1
        if admitted and samples_per_visit:
            rows.extend(_quality_rows(rng, appointment_id, endpoint.id,
                                      ((provider_id, "provider"), (patient_id, "patient")),
                                      admitted, ended, samples_per_visit, ids))
        for kind, when in (("confirmation", start - timedelta(days=7)),
                           ("reminder", start - timedelta(hours=24))):
            if when > now:
                status, sent, code = "scheduled", None, None
            else:
                status, code = rng.choices((("delivered", None), ("failed", "30003"),
                                            ("failed", "30005"), ("suppressed", "landline"),
                                            ("sent", None)), (88, 4, 2, 3, 3))[0]
                sent = when if status in ("delivered", "sent", "failed") else None
            rows.append(("sms_messages", TEXT_COLUMNS, (
                ids["sms_messages"], appointment_id, patient_id, kind,
                (language or "en").split("-")[0] if language != "pt-BR" else "pt_BR", when,
                status, sent, sent, code, None, 1 if sent else 0, when)))
            ids["sms_messages"] += 1
        yield rows


def _quality_rows(rng: random.Random, appointment_id: int, endpoint_id: int,
                  people: Iterable[tuple[int, str]], admitted: datetime, ended: datetime,
                  samples_per_visit: int, ids: dict[str, int]) -> Iterator[tuple]:
    """10-second samples for each person in the call (their rollups are rebuilt after,
    see ``generate``)."""
    people = list(people)
    per_person = max(1, samples_per_visit // len(people))
    bad = rng.random() < 0.1  # a tenth of calls on a poor network
    for participant_id, role in people:
        browser, system = BROWSERS[rng.randrange(len(BROWSERS))]
        relayed = rng.random() < 0.15
        step = max(10.0, (ended - admitted).total_seconds() / per_person)
        for index in range(per_person):
            at = admitted + timedelta(seconds=10 + index * step)
            rtt = max(5.0, rng.gauss(260 if bad else 60, 60 if bad else 20))
            jitter = max(0.5, rng.gauss(25 if bad else 6, 8 if bad else 3))
            loss = max(0.0, rng.gauss(4 if bad else 0.3, 2 if bad else 0.3))
            bitrate = max(30.0, rng.gauss(400 if bad else 1400, 150 if bad else 300))
            mos = quality.estimate_mos(rtt, jitter, loss)
            yield ("call_quality_samples", SAMPLE_COLUMNS, (
                ids["call_quality_samples"], participant_id, at, rtt, jitter, loss, bitrate,
                bitrate * 0.9, mos, relayed, browser, system))
            ids["call_quality_samples"] += 1
