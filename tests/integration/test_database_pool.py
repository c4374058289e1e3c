"""The PostgreSQL connection pool (extensions.py, settings.py): a pooled connection whose
server process went away while it sat idle (a restart, a failover) is replaced before a
request uses it; one used moments ago is not tested again (the round trip it saves was a
third of a patient socket's), and if it is dead after all the request fails once and
the pool replaces every connection it holds."""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

import extensions
from extensions import db
from settings import sqlalchemy_url
from tests.conftest import POSTGRES_URL, build_app, dispose_app, postgres_schema

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (DATABASE_URL)")

BACKEND = sa.text("SELECT pg_backend_pid()")


@pytest.fixture
def app(tmp_path, monkeypatch):
    with postgres_schema() as url:
        application = build_app(tmp_path, monkeypatch, SANDBOX=False, DATABASE_URL=url)
        yield application
        dispose_app(application)


def _pooled_backend(app) -> int:
    """The server process of the connection a request used, now back in the pool."""
    with app.app_context():
        pid = db.session.execute(BACKEND).scalar()
        db.session.remove()
    return pid


def _end_backend(pid: int) -> None:
    admin = sa.create_engine(sqlalchemy_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            assert connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                                      {"pid": pid}).scalar()
            deadline = time.monotonic() + 30
            while connection.execute(sa.text("SELECT count(*) FROM pg_stat_activity "
                                             "WHERE pid = :pid"), {"pid": pid}).scalar():
                assert time.monotonic() < deadline, "the backend did not end"
                time.sleep(0.05)
    finally:
        admin.dispose()


def test_an_idle_connection_whose_server_process_ended_is_replaced_before_use(
        app, monkeypatch):
    pid = _pooled_backend(app)
    _end_backend(pid)
    monkeypatch.setattr(extensions, "PING_AFTER_IDLE_SECONDS", 0.0)

    with app.app_context():
        replaced = db.session.execute(BACKEND).scalar()

    assert replaced != pid


def test_a_connection_used_moments_ago_is_not_tested_and_a_dead_one_fails_only_once(
        app, monkeypatch):
    monkeypatch.setattr(extensions, "PING_AFTER_IDLE_SECONDS", 3600.0)
    first = _pooled_backend(app)
    assert _pooled_backend(app) == first  # reused as it was
    _end_backend(first)

    with app.app_context(), pytest.raises(sa.exc.OperationalError):
        db.session.execute(BACKEND).scalar()
    after = _pooled_backend(app)

    assert after != first
