"""Extension objects, created unbound here and bound in ``create_app()``.

Features import these from here, never from ``app.py``: run as ``python app.py`` that
module is ``__main__``, and importing it again would build a second, unserved SocketIO.
"""
from __future__ import annotations

import logging
import sqlite3

from flask.sessions import SecureCookieSessionInterface
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    # Named constraints make Alembic migrations identical on SQLite and PostgreSQL and
    # let batch mode (SQLite's ALTER TABLE) find constraints it has to recreate.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class RouteLimiter(Limiter):
    """Flask-Limiter, minus its check before every request.

    That check applies default and application-wide limits; we set none. Routes opt in
    with ``@limiter.limit`` (``/j/<token>``, the device test, sign-in, webhooks), and the
    decorator checks those itself. Skipping the empty check saved ~10 % of the CPU of a
    ``/join`` request (docs/patient-join.md)."""

    def _check_request_limit(self, callable_name=None, in_middleware=True):
        manager = self.limit_manager
        if in_middleware and not (self._meta_limits or manager.default_limits
                                  or manager.application_limits):
            return
        super()._check_request_limit(callable_name=callable_name, in_middleware=in_middleware)


class CachedSigningSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signer built once per secret rather than
    on every request (it derives its key with an HMAC each time)."""

    def get_signing_serializer(self, app):
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = app.extensions.get("vv_session_signer")
        if cached is None or cached[0] != keys:
            cached = (keys, super().get_signing_serializer(app))
            app.extensions["vv_session_signer"] = cached
        return cached[1]


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
socketio = SocketIO()
babel = Babel()
# No default limits: routes opt in (``/j/<token>``). Storage comes from the app's config
# (memory, or Redis with VV_REDIS_URL), read again by each init_app.
limiter = RouteLimiter(key_func=get_remote_address)
# Its INFO lines name the client's IP address with each breach; our own log line says
# which route was limited, without who.
logging.getLogger("flask-limiter").setLevel(logging.WARNING)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record) -> None:
    """SQLite leaves foreign keys off and fails at once on a locked file; fix both, and use
    WAL so the server's readers never wait for a writer. In WAL mode, synchronous=NORMAL
    syncs at checkpoints instead of every commit: a crash of the process loses nothing and
    the file cannot be corrupted; a power cut may lose the last commits (the SQLite
    documentation's recommended setting for WAL). Each commit's fsync cost ~1 ms of a
    blocked server (docs/performance.md)."""
    if not isinstance(dbapi_connection, sqlite3.Connection):
        return
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
