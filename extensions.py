"""Extension objects, created unbound here and bound in ``create_app()``.

Features import these from here, never from ``app.py``: run as ``python app.py`` that
module is ``__main__``, and importing it again would build a second, unserved SocketIO.
"""
from __future__ import annotations

import logging
import sqlite3
import time

from flask.sessions import SecureCookieSessionInterface
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from itsdangerous import BadSignature
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import Pool

log = logging.getLogger(__name__)


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


# How long a Redis client waits to connect or for a reply before the call fails. Local
# Redis answers in well under a millisecond; a second means it is down or stuck.
REDIS_TIMEOUT_SECONDS = 1.0


def redis_client_options() -> dict:
    """Keyword arguments for ``redis.Redis.from_url`` that fail fast while Redis is down.

    redis-py retries a refused connection ten times with backoff (seconds in all), and
    without a connect timeout an unreachable host holds the caller for the system's TCP
    timeout. During an outage every rate-limited request and every Socket.IO emit would
    pay that. One immediate retry is kept: after a Redis restart the pooled connection is
    stale, and the retry reconnects. (A subscriber's blocking read ignores the timeout.)"""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return {"socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_timeout": REDIS_TIMEOUT_SECONDS, "retry": Retry(NoBackoff(), 1)}


class RouteLimiter(Limiter):
    """Flask-Limiter, minus its check before every request, and counting in this process
    while its storage (Redis) is down.

    The skipped check applies default and application-wide limits; we set none. Routes
    opt in with ``@limiter.limit`` (the device test, sign-in, webhooks), and the decorator
    checks those itself. Skipping the empty check saved ~10 % of the CPU of a ``/join``
    request (docs/patient-join.md).

    While the storage fails, the same limits are counted in this process's memory
    (Flask-Limiter's in-memory fallback) instead of answering 500, so each process then
    allows the full limit on its own. ``limiter.limiter`` fails over for every caller:
    the decorator's check, its response headers, and code that counts through it directly
    (``patient_join/guesses.py``). The storage is tried again after 1, 2, 4 ... 32 s. A
    warning says so at most once per ``FALLBACK_WARNING_INTERVAL_SECONDS``, and an info
    line notes the recovery."""

    FALLBACK_WARNING_INTERVAL_SECONDS = 60.0
    _RECHECK_MAX_SECONDS = 32.0

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._failover = _FailoverStrategy(self)
        self._reset_storage_state()

    def _reset_storage_state(self) -> None:
        # Our own flag, not the library's ``_storage_dead``: the library would then also
        # run its own checks and recovery, unseen by the warnings here.
        self._down = False
        self._fallback_since: float | None = None
        self._fallback_warned_at: float | None = None
        self._recheck_at = 0.0
        self._recheck_after = 1.0

    def init_app(self, app) -> None:
        """Flask-Limiter's, from a clean slate: the one limiter serves every app the
        factory builds (tests build many), and would otherwise keep the last app's storage
        options and its belief that the storage is down."""
        self._storage_options = {}
        self._storage_dead = False
        self._reset_storage_state()
        if str(app.config.get("RATELIMIT_STORAGE_URI", "")).startswith("redis"):  # rediss too
            app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", redis_client_options())
        super().init_app(app)

    @property
    def limiter(self):
        """The rate-limiting strategy, failing over to the in-memory one (see the class)."""
        return self._failover

    @property
    def counting_per_process(self) -> bool:
        """True while the storage is down and limits are counted in memory here."""
        return self._down

    def _check_request_limit(self, callable_name=None, in_middleware=True):
        manager = self.limit_manager
        if in_middleware and not (self._meta_limits or manager.default_limits
                                  or manager.application_limits):
            return
        super()._check_request_limit(callable_name=callable_name, in_middleware=in_middleware)

    def _strategy_call(self, name: str, *args, **kwargs):
        """``name`` (hit, test, get_window_stats, clear) on the storage's strategy, or on
        the in-memory fallback's while the storage is down."""
        now = time.monotonic()
        if self._down and now >= self._recheck_at:
            self._recheck(now)
        if not self._down:
            try:
                return getattr(self._limiter, name)(*args, **kwargs)
            except self.storage.base_exceptions:
                log.debug("rate limit storage failed", exc_info=True)
                self._down = True
                self._recheck_at, self._recheck_after = now + 1.0, 1.0
        self._note_fallback(now)
        return getattr(self._fallback_limiter, name)(*args, **kwargs)

    def _recheck(self, now: float) -> None:
        if self.storage.check():
            self._down = False
            log.info("rate limit storage is back: limits are shared again",
                     extra={"fallback_seconds": round(now - (self._fallback_since or now), 1)})
            self._fallback_since = self._fallback_warned_at = None
            return
        self._recheck_after = min(self._recheck_after * 2, self._RECHECK_MAX_SECONDS)
        self._recheck_at = now + self._recheck_after

    def _note_fallback(self, now: float) -> None:
        if self._fallback_since is None:
            self._fallback_since = now
        warned = self._fallback_warned_at
        if warned is None or now - warned >= self.FALLBACK_WARNING_INTERVAL_SECONDS:
            self._fallback_warned_at = now
            log.warning("rate limit storage (Redis) unreachable: limits are counted in "
                        "this process only until it is back",
                        extra={"fallback_seconds": round(now - self._fallback_since, 1)})


class _FailoverStrategy:
    """What ``RouteLimiter.limiter`` hands out: a strategy's methods, failing over."""

    def __init__(self, owner: RouteLimiter) -> None:
        self._owner = owner

    def hit(self, item, *identifiers, cost: int = 1) -> bool:
        return self._owner._strategy_call("hit", item, *identifiers, cost=cost)

    def test(self, item, *identifiers, cost: int = 1) -> bool:
        return self._owner._strategy_call("test", item, *identifiers, cost=cost)

    def get_window_stats(self, item, *identifiers):
        return self._owner._strategy_call("get_window_stats", item, *identifiers)

    def clear(self, item, *identifiers) -> None:
        return self._owner._strategy_call("clear", item, *identifiers)


class CachedSigningSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the serializer built once per secret rather
    than on every request and socket connect (a few objects each time; the key is still
    derived per signature, inside itsdangerous), and a cookie already checked not checked
    again.

    A patient's phone sends the same cookie with every reload of the join page and every
    socket connect. Checking its signature and decoding it was a tenth of ``/join``'s CPU.
    A cookie that passed is kept (by its whole value, signature included: only a cookie
    that verified can match) with its signing time and its decoded payload as JSON: a
    repeat only re-checks the age and parses that JSON into a fresh session, so nothing
    one request changes reaches another. At most ``CHECKED_COOKIES`` are kept, per
    secret; a full cache starts again empty."""

    CHECKED_COOKIES = 4096

    def _signing(self, app) -> tuple:
        """(the serializer, the cookies it has checked: value -> (signed at, JSON)), made
        again when the secret keys change."""
        keys = (app.secret_key, tuple(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        cached = app.extensions.get("vv_session_signer")
        if cached is None or cached[0] != keys:
            cached = (keys, super().get_signing_serializer(app), {})
            app.extensions["vv_session_signer"] = cached
        return cached[1], cached[2]

    def get_signing_serializer(self, app):
        return self._signing(app)[0]

    def open_session(self, app, request):
        signer, checked = self._signing(app)
        if signer is None:
            return None
        value = request.cookies.get(self.get_cookie_name(app))
        if not value:
            return self.session_class()
        max_age = int(app.permanent_session_lifetime.total_seconds())
        hit = checked.get(value)
        if hit is not None and time.time() - hit[0] <= max_age:
            return self.session_class(signer.serializer.loads(hit[1]))
        try:
            data, signed_at = signer.loads(value, max_age=max_age, return_timestamp=True)
        except BadSignature:
            return self.session_class()
        if len(checked) >= self.CHECKED_COOKIES:
            checked.clear()
        checked[value] = (signed_at.timestamp(), signer.serializer.dumps(data))
        return self.session_class(data)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
socketio = SocketIO()
babel = Babel()
# No default limits: routes opt in. Storage comes from the app's config (memory, or Redis
# with VV_REDIS_URL), read again by each init_app. A storage error never fails a request:
# the in-memory fallback takes over (RouteLimiter), and anything else going wrong in the
# library after the check (headers, a deduction) is logged and swallowed.
limiter = RouteLimiter(key_func=get_remote_address, in_memory_fallback_enabled=True,
                       swallow_errors=True)


class _AtMostOncePerMinute(logging.Filter):
    """Lets a record whose message starts with ``prefix`` through at most once a minute.

    python-socketio logs two errors for every emit it cannot publish; while Redis is down
    that is two lines per presence change, lobby update and call signal."""

    def __init__(self, prefix: str, interval: float = 60.0) -> None:
        super().__init__()
        self.prefix, self.interval = prefix, interval
        self._last: float | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        now = time.monotonic()
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True


logging.getLogger("socketio.server").addFilter(_AtMostOncePerMinute("Cannot publish to redis"))


# Its INFO lines name the client's IP address with each breach; our own log line says
# which route was limited, without who.
logging.getLogger("flask-limiter").setLevel(logging.WARNING)


# A pooled PostgreSQL connection is tested with a round trip before use only when it sat
# unused long enough for the server to have gone away meanwhile (a restart, a failover).
# SQLAlchemy's ``pool_pre_ping`` tests every checkout: under load connections come back
# within milliseconds, and that test was one of a patient socket's three round trips. A
# connection that dies in use raises a disconnect error, and SQLAlchemy then replaces
# every connection the pool holds, so a failover costs the requests in flight.
PING_AFTER_IDLE_SECONDS = 2.0


@event.listens_for(Pool, "checkin")
def _note_returned(dbapi_connection, record) -> None:
    record.info["returned_at"] = time.monotonic()


@event.listens_for(Pool, "checkout")
def _ping_if_idle(dbapi_connection, record, _proxy) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        return
    returned = record.info.get("returned_at")  # None: connected just now
    if returned is None or time.monotonic() - returned < PING_AFTER_IDLE_SECONDS:
        return
    autocommit = dbapi_connection.autocommit  # the test must not open a transaction
    try:
        dbapi_connection.autocommit = True
        dbapi_connection.execute(";")
    except Exception as error:
        # The pool drops this connection and checks out another (or connects anew).
        raise DisconnectionError("the pooled connection is gone") from error
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = autocommit


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
