"""What the integration health report shows of a stored error: its class, never text the
EHR chose (a body, a message that might quote a patient)."""
from __future__ import annotations

import pytest

from ehr.backend_auth import failure_class
from ehr.errors import EhrUnavailable, SmartError, TokenRefused
from reports.health import error_summary


@pytest.mark.parametrize("stored, shown", [
    (None, None),
    ("HTTP 503", "HTTP 503"),
    ("HTTP 422 processing", "HTTP 422 processing"),
    ("timeout", "timeout"),
    ("ConnectionError", "ConnectionError"),
    ("internal error", "error"),
    ("token: smart-configuration: ConnectionError", "token: ConnectionError"),
    ("token: token endpoint: HTTP 500", "token: HTTP 500"),
    ("token: token request refused: invalid_client", "token: invalid_client"),
    ("token: token request refused: Jane Doe", "token: error"),
    ("token: Patient Jane Doe is not allowed", "token: error"),
    ("token: the EHR does not offer client_credentials (SMART Backend Services)", "token: error"),
])
def test_a_stored_error_is_shown_as_its_class_only(stored, shown):
    assert error_summary(stored) == shown


@pytest.mark.parametrize("exc, recorded", [
    (TokenRefused("invalid_client"), "TokenRefused invalid_client"),
    (TokenRefused("HTTP 400"), "TokenRefused HTTP 400"),
    (TokenRefused("Jane Doe's token is refused"), "TokenRefused"),
    (EhrUnavailable("token endpoint: HTTP 503"), "EhrUnavailable HTTP 503"),
    (EhrUnavailable("smart-configuration: ConnectionError"), "EhrUnavailable"),
    (SmartError("smart-configuration has no token_endpoint"), "SmartError"),
])
def test_a_token_failure_is_recorded_as_its_class_only(exc, recorded):
    assert failure_class(exc) == recorded


def test_a_csv_cell_a_spreadsheet_would_run_is_written_as_text():
    # A department or provider name comes from the EHR; an analyst opens the CSV in Excel.
    from reports.framework import Column, Table, read_csv

    table = Table("t", "T", "T", [Column("name", "Name", "text"), Column("visits", "Visits")],
                  [{"name": "=HYPERLINK(\"http://x\")", "visits": -3},
                   {"name": "@SUM(A1)", "visits": 2}, {"name": "Cardiology", "visits": None}])

    rows = read_csv(table.csv())

    assert [row["name"] for row in rows] == ["'=HYPERLINK(\"http://x\")", "'@SUM(A1)",
                                             "Cardiology"]
    assert [row["visits"] for row in rows] == ["-3", "2", ""]  # numbers stay numbers
