"""Shared fixtures: an app per test (flaskr), its client and CLI runner.

Storage tests run on SQLite always and on PostgreSQL too when ``DATABASE_URL`` is set
(CI sets it); each PostgreSQL test gets its own schema so tests cannot see each other.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path

import flask_migrate
import pytest
from argon2 import PasswordHasher
from flask import Flask
from sqlalchemy import create_engine, text

from app import create_app
from extensions import db
from settings import sqlalchemy_url
from tests.redis_server import private_redis  # noqa: F401  (a fixture for every test)

POSTGRES_URL = os.environ.get("DATABASE_URL")
REDIS_URL = os.environ.get("REDIS_URL")


def _backends() -> list:
    backends = ["sqlite"]
    if POSTGRES_URL and POSTGRES_URL.startswith(("postgres://", "postgresql")):
        backends.append("postgresql")
    return backends


@contextmanager
def postgres_schema():
    """A URL for a fresh PostgreSQL schema of its own (via search_path), dropped afterwards,
    so tests sharing one database cannot see each other's rows."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(sqlalchemy_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=_backends())
def database_url(request, tmp_path):
    """A fresh, empty database: a SQLite file, or a PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'app.db'}"
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'app.db'}"


def make_config(tmp_path, **overrides) -> dict:
    """Test settings: an instance folder per test, threading async mode, text logs."""
    config = {
        "TESTING": True,
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "ENV": "development",
        "SECRET_KEY": "test-secret-key-that-is-long-enough-0123456789",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.db'}",
        "ASYNC_MODE": "threading",
        # Socket handlers write presence at once, so a test reads it right after (the
        # batched writer has its own tests).
        "PRESENCE_WRITE_DELAY_SECONDS": 0,
        "LOG_FORMAT": "text",
        "SANDBOX": True,
    }
    config.update(overrides)
    return config


_migrated_sqlite: list[Path] = []  # this test process's migrated SQLite file, once made


def copy_migrated_sqlite(database_url: str) -> bool:
    """A new SQLite database starts as a copy of one the real migrations made earlier in
    this test process: the same file, without Alembic's 0.15-0.2 s for every test. Other
    databases (and a file that already exists) are left alone; False then."""
    if not database_url.startswith("sqlite:///"):
        return False
    target = Path(database_url.removeprefix("sqlite:///"))
    if target.exists():
        return False
    if not _migrated_sqlite:
        folder = Path(tempfile.mkdtemp(prefix="vv-migrated-"))
        template = create_app(make_config(folder))
        with template.app_context():
            flask_migrate.upgrade()
        dispose_app(template)
        _migrated_sqlite.append(folder / "app.db")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_migrated_sqlite[0], target)
    return True


def build_app(tmp_path, monkeypatch, **overrides) -> Flask:
    """An app on ``make_config(tmp_path, **overrides)``, its database migrated and, with
    the sandbox on (the default here), the sandbox seeded; run from ``tmp_path``. Pair it
    with ``dispose_app``."""
    monkeypatch.chdir(tmp_path)
    config = make_config(tmp_path, **overrides)
    # The real migrations, as `flask db upgrade` runs them, not create_all(): run here,
    # or run once for this process and copied (SQLite).
    copied = copy_migrated_sqlite(config["DATABASE_URL"])
    application = create_app(config)
    if not copied:
        with application.app_context():
            flask_migrate.upgrade()
    if application.config["SANDBOX"]:
        seed_sandbox(application)
    return application


def seed_sandbox(application: Flask) -> None:
    """What `flask sandbox seed` does: the sandbox's tables and today's clinic. Building the
    app writes nothing, so a test that wants the sandbox's data asks for it."""
    from sandbox_ehr.seed import seed

    with application.app_context():
        seed()
        db.session.remove()


def dispose_app(application: Flask) -> None:
    """Close what ``build_app``'s app holds open: its session and database connections."""
    with application.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch):
    """Admin passwords in tests hashed with argon2id at its smallest cost: at the real
    cost (64 MiB, 3 passes) each hash and each sign-in took 0.1-0.7 s of CPU, hundreds of
    times a run. Verification reads the cost from the hash itself, so the code under test
    is the same; the servers of the browser tests keep the real cost."""
    import admin.auth

    hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    monkeypatch.setattr(admin.auth, "_hasher", hasher)
    monkeypatch.setattr(admin.auth, "_DUMMY_HASH", hasher.hash("not-a-real-password"))


@pytest.fixture
def app(tmp_path, monkeypatch):
    application = build_app(tmp_path, monkeypatch)
    yield application
    dispose_app(application)


@pytest.fixture
def app_each_db(tmp_path, monkeypatch, database_url):
    """An app per test on SQLite and, with DATABASE_URL set, on PostgreSQL too.

    A module whose tests should run on each database overrides ``app`` with it."""
    application = build_app(tmp_path, monkeypatch, DATABASE_URL=database_url)
    yield application
    dispose_app(application)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def playwright_driver():
    """One Playwright driver per test process: its sync API runs an event loop of its own
    and refuses to start a second while the first lives, so the browser tests and the
    stack test (which may share an xdist worker) each launch their Chromium from this."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


# The longest files (about a minute or more each on this 2-core machine), started first:
# the xdist workers take whole files in collection order, and one of these picked up last
# kept a worker busy alone for the last minute of the run.
LONGEST_FIRST = (
    "tests/browser/test_device_test.py",
    "tests/stack/test_stack.py",
    "tests/integration/test_sms_two_processes.py",
    "tests/integration/test_bench_smoke.py",
    "tests/browser/test_visit_return.py",
    "tests/browser/test_no_webrtc.py",
)


def pytest_collection_modifyitems(items):
    rank = {path: index for index, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
