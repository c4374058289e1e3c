"""What every report shares: its filters, its tables and charts as data, CSV and JSON.

A report is a module with a ``build(filters, now) -> Report`` function, registered once
with ``register(ReportKind(...))``. The page (``/admin/reports/<name>``, its CSV and
``/export.csv``), the ``flask reports <name>`` command, the reports index and the admin
home's links all come from that registration (``reports/views.py``, ``reports/cli.py``);
docs/reports.md and /tmp notes describe how to add one. Nothing here reads ``request``:
``Filters.parse`` takes the query string (or the CLI's options) as a mapping.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from flask_babel import lazy_gettext as _l

from reports.health import MAX_DAYS, DateRange, InvalidRange, csv_cell, endpoints, zone_of

PERIODS = ("day", "week")
FILTER_FIELDS = ("endpoint", "department", "provider", "period")


class FilterError(ValueError):
    """A filter the report cannot use: answered with 400 and ``message`` (translated)."""

    def __init__(self, message: Any) -> None:
        super().__init__(str(message))
        self.message = message


@dataclass(frozen=True)
class Filters:
    """The report's question: whole days (each endpoint's own time zone), and optionally one
    endpoint, one department (as the EHR names it), one provider (EHR user id, such as
    ``Practitioner/abc``), and the period rows are grouped by (``day`` or ``week``)."""

    days: DateRange
    endpoint: str | None = None
    department: str | None = None
    provider: str | None = None
    period: str = "day"
    # The endpoints the report covers (the chosen one, or all), by id, with their zone.
    zones: Mapping[int, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, args: Mapping[str, Any], now: datetime) -> Filters:
        """From a query string or CLI options (``from``, ``to``, ``endpoint``, ``department``,
        ``provider``, ``period``); missing dates give the last 7 days in the clinic's time
        zone. FilterError for an unknown endpoint, unreadable dates or an unknown period."""
        def text(key: str) -> str | None:
            value = args.get(key)
            value = str(value).strip() if value is not None else ""
            return value[:255] or None

        name = text("endpoint")
        chosen = endpoints(name)
        if name and not chosen:
            raise FilterError(_l("There is no endpoint named %(name)s.", name=name))
        period = text("period") or "day"
        if period not in PERIODS:
            raise FilterError(_l("Group by day or by week."))
        zone = zone_of(chosen[0].site_timezone if chosen else None)
        try:
            days = DateRange.parse(text("from"), text("to"), now.astimezone(zone).date())
        except InvalidRange:
            raise FilterError(_l(
                "Choose dates written YYYY-MM-DD, the first on or before the last, at most "
                "%(days)d days apart.", days=MAX_DAYS)) from None
        return cls(days, name, text("department"), text("provider"), period,
                   {e.id: zone_of(e.site_timezone).key for e in chosen})

    @classmethod
    def default(cls, now: datetime) -> Filters:
        """The last 7 days, every endpoint: what a page shows under a 400 message."""
        return cls.parse({}, now)

    def by_zone(self) -> dict[str, list[int]]:
        """Endpoint ids per time zone name, so each is read in its own whole days."""
        grouped: dict[str, list[int]] = {}
        for endpoint_id, zone in self.zones.items():
            grouped.setdefault(zone, []).append(endpoint_id)
        return grouped

    def bounds(self, zone: str) -> tuple[datetime, datetime]:
        """[first day's midnight, the midnight after the last day) in ``zone``."""
        return self.days.bounds(ZoneInfo(zone))

    def period_of(self, moment: datetime, zone: str) -> date:
        """The day (or the Monday of the week) ``moment`` falls in, in ``zone``."""
        day = moment.astimezone(ZoneInfo(zone)).date()
        return day - timedelta(days=day.weekday()) if self.period == "week" else day

    def periods(self) -> list[date]:
        """Every period of the range, in order, even those with no data."""
        first = self.days.start - timedelta(days=self.days.start.weekday()) \
            if self.period == "week" else self.days.start
        step = timedelta(days=7 if self.period == "week" else 1)
        found = []
        while first <= self.days.end:
            found.append(first)
            first += step
        return found

    def query(self, **changes: Any) -> dict[str, str]:
        """The query string that asks for these filters (for links and downloads)."""
        values = {"from": self.days.start.isoformat(), "to": self.days.end.isoformat(),
                  "endpoint": self.endpoint, "department": self.department,
                  "provider": self.provider, "period": self.period}
        values.update(changes)
        return {key: str(value) for key, value in values.items() if value}

    def as_json(self) -> dict[str, Any]:
        return {"from": self.days.start.isoformat(), "to": self.days.end.isoformat(),
                "endpoint": self.endpoint, "department": self.department,
                "provider": self.provider, "period": self.period}


# --- tables ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """A table column: ``key`` names it in CSV and JSON; ``label`` is what the page shows.
    ``kind`` says how the page writes a value: ``text``, ``int``, ``percent`` (a 0..1 share),
    ``seconds`` (a duration) or ``date``."""

    key: str
    label: Any
    kind: str = "int"


@dataclass
class Table:
    """Rows of plain values (``None`` when there is none), keyed by column. The first
    column heads each row. ``key`` is the table's name in ``?table=`` and in JSON."""

    key: str
    title: Any
    caption: Any
    columns: Sequence[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    # What the page says when there are no rows (default: "Nothing in this range.").
    empty: Any = None
    # On the page, rows past this many go behind "Show the other N rows" (a phone stacks
    # each row into a card: 200 providers were thousands of lines). CSV and JSON have all.
    fold_after: int | None = None

    @property
    def shown_rows(self) -> list[dict[str, Any]]:
        return self.rows if self.fold_after is None else self.rows[:self.fold_after]

    @property
    def folded_rows(self) -> list[dict[str, Any]]:
        return [] if self.fold_after is None else self.rows[self.fold_after:]

    def csv(self) -> str:
        """The table as CSV: a header of column keys, then the rows (ISO dates, seconds and
        shares as plain numbers, empty for none)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        writer.writerow([column.key for column in self.columns])
        for row in self.rows:
            writer.writerow([_csv_value(row.get(column.key)) for column in self.columns])
        return buffer.getvalue()

    def as_json(self) -> list[dict[str, Any]]:
        return [{column.key: _plain(row.get(column.key)) for column in self.columns}
                for row in self.rows]


def _plain(value: Any) -> Any:
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    if isinstance(value, float):
        return round(value, 4)
    return value


def _csv_value(value: Any) -> Any:
    return csv_cell(_plain(value))


def read_csv(text: str) -> list[dict[str, str]]:
    """A table's CSV read back (the round trip tests use it)."""
    return list(csv.DictReader(io.StringIO(text)))


# --- charts ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart drawn as SVG on the server (``reports/_report.html``): one bar
    per row of ``table``, ``label_column`` naming the bar and ``value_column`` its length.
    The table is printed under it, so the chart can always be read as numbers."""

    key: str
    title: Any
    description: Any
    table: Table
    label_column: str
    value_column: str

    def bars(self) -> list[tuple[str, float, Any]]:
        """(label, share of the longest bar 0..1, value) per row; the label as the table
        holds it (a date stays a date, so the page writes it as the table does)."""
        values = [(row.get(self.label_column), row.get(self.value_column) or 0)
                  for row in self.table.rows]
        top = max((value for _label, value in values), default=0) or 1
        return [(label, value / top, value) for label, value in values]


# --- a report --------------------------------------------------------------------------------

@dataclass
class Report:
    """One report's answer: its tables in page order, charts drawn over some of them, and
    short notes shown above them."""

    name: str
    filters: Filters
    generated_at: datetime
    tables: list[Table]
    charts: list[Chart] = field(default_factory=list)
    notes: list[Any] = field(default_factory=list)

    def table(self, key: str | None) -> Table:
        """The table named ``key``; the first (the report's main table) for none. KeyError
        for a name the report does not have."""
        if not key:
            return self.tables[0]
        for table in self.tables:
            if table.key == key:
                return table
        raise KeyError(key)

    def chart_for(self, table: Table) -> Chart | None:
        return next((chart for chart in self.charts if chart.table is table), None)

    def as_json(self) -> dict[str, Any]:
        return {"report": self.name, "generated_at": self.generated_at.isoformat(),
                "filters": self.filters.as_json(),
                "tables": {table.key: table.as_json() for table in self.tables}}


@dataclass(frozen=True)
class ReportKind:
    """A registered report: its URL name (``/admin/reports/<name>``, ``flask reports
    <name>``), title and one-line summary (index, navigation, admin home), ``build``, and
    the filters its form offers (``FILTER_FIELDS``; dates always)."""

    name: str
    title: Any
    summary: Any
    build: Callable[[Filters, datetime], Report]
    filters: tuple[str, ...] = ("endpoint",)
    # A page that extends reports/report.html to add to it (its blocks: report_intro,
    # report_before_tables, report_after_tables).
    template: str = "reports/report.html"


REGISTRY: dict[str, ReportKind] = {}


def register(kind: ReportKind) -> ReportKind:
    """Add a report; its page, CSV and CLI command exist from then on."""
    unknown = set(kind.filters) - set(FILTER_FIELDS)
    if unknown:
        raise ValueError(f"unknown filters {sorted(unknown)}")
    REGISTRY[kind.name] = kind
    return kind


def kinds() -> list[ReportKind]:
    """Registered reports in the order they were registered."""
    return list(REGISTRY.values())


def endpoint_names() -> list[str]:
    return [endpoint.name for endpoint in endpoints()]


# --- distributions -----------------------------------------------------------------------------

def percentile(values: Sequence[float], share: float) -> float | None:
    """The ``share`` percentile (0..1) of ``values``, interpolated between the two nearest
    ranks like PostgreSQL's ``percentile_cont``; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = (len(ordered) - 1) * share
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def histogram(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Counts per bucket: ``[edges[i], edges[i+1])``, the last bucket open-ended
    (``len(edges)`` buckets; values below ``edges[0]`` count in the first)."""
    counts = [0] * len(edges)
    for value in values:
        index = 0
        while index + 1 < len(edges) and value >= edges[index + 1]:
            index += 1
        counts[index] += 1
    return counts
