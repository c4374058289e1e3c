"""Every setting, declared once with its default and why it exists.

Values come from, in order: the defaults below, the environment (``VV_<NAME>``), then
the mapping passed to ``create_app(config)`` (tests). ``docs/configuration.md`` is
generated from this list (``python -m settings``), so the two never drift apart.
"""
from __future__ import annotations

import ipaddress
import os
import secrets
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

ENV_PREFIX = "VV"


class ConfigError(Exception):
    """The configuration cannot run safely; the message is one line for the operator."""


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _str_or_none(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _str_or_empty(value: Any) -> str:
    return "" if value is None else str(value).strip()


def grade_pair(value: Any) -> tuple[float, float]:
    """"a,b": the pass limit then the fail limit of one device-test metric."""
    if isinstance(value, (tuple, list)):
        parts = list(value)
    else:
        parts = [part.strip() for part in str(value).split(",")]
    if len(parts) != 2:
        raise ValueError(f"expected two numbers like 250,400, got {value!r}")
    return float(parts[0]), float(parts[1])


def _choice(*allowed: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return text

    return parse


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str

    @property
    def env_var(self) -> str:
        return f"{ENV_PREFIX}_{self.name}"


SETTINGS: tuple[Setting, ...] = (
    Setting("ENV", "development", "`development` or `production`. Production refuses to start "
            "with the sandbox on, without a strong secret key, or on plain http for a public host.",
            _choice("development", "production")),
    Setting("SECRET_KEY", None, "Signs sessions and derives at-rest encryption keys. Development "
            "generates one into `instance/secret_key` on first run; production requires it "
            "(at least 32 characters).", _str_or_none),
    Setting("DATABASE_URL", None, "SQLAlchemy URL. Default: SQLite file `instance/virtual-visits.db`. "
            "`postgresql://user@host/db` uses psycopg 3.", _str_or_none),
    Setting("DATABASE_POOL_SIZE", 20, "PostgreSQL connections each server process keeps open "
            "(and half as many more it may open for a burst, closed after). Every greenlet "
            "waiting on the database holds one, so a pool smaller than the crowd after a restart "
            "opens and closes a connection per request: a new PostgreSQL backend process each "
            "time. Keep processes × 1.5 × this under the server's `max_connections` (100 by "
            "default), or connections are refused.", int),
    Setting("REDIS_URL", None, "Optional. With it, several server processes share Socket.IO emits "
            "and presence, and `/readyz` checks Redis.", _str_or_none),
    Setting("REDIS_CHANNEL", "virtual-visits", "Redis pub/sub channel the processes of one "
            "installation share; give each installation on a shared Redis its own."),
    Setting("PUBLIC_BASE_URL", None, "The URL patients and the EHR reach us at; used in links, "
            "SMART redirect URIs and the JWKS URL. Default: `http://<HOST>:<PORT>`. Must be https "
            "in production unless it is a loopback address.", _str_or_none),
    Setting("INSTANCE_PATH", None, "Folder for the SQLite files and the development secret. "
            "Default: `instance/` beside `app.py`.", _str_or_none),
    Setting("HOST", "127.0.0.1", "Address `python app.py` listens on."),
    Setting("PORT", 5000, "Port `python app.py` listens on.", int),
    Setting("ASYNC_MODE", "gevent", "Socket.IO async mode: `gevent` when served (real WebSocket), "
            "`threading` in tests.", _choice("gevent", "threading")),
    Setting("SANDBOX", False, "Serve the built-in sandbox EHR under `/sandbox` for the demo and the "
            "tests. Never in production.", _bool),
    Setting("SANDBOX_TIMEZONE", "America/Chicago", "IANA time zone of the sandbox clinic's schedule."),
    Setting("SANDBOX_FIRST_VISIT", "09:00", "Clinic time of the sandbox's first visit, or `now` "
            "(what `make demo` uses) so there is always a visit whose waiting room is open."),
    Setting("SANDBOX_DATABASE_URL", None, "Where the sandbox EHR keeps its FHIR resources. Default: "
            "SQLite file `instance/sandbox-ehr.db`, apart from the app's own data.", _str_or_none),
    Setting("PRESENCE_GRACE_SECONDS", 5.0, "How long a participant whose last connection closed "
            "still counts as connected, so a network blip or a reload does not flap.", float),
    Setting("PROCESS_TIMEOUT_SECONDS", 10.0, "A server process whose heartbeat is older than this "
            "is taken as dead; the others then clear the presence of its connections.", float),
    Setting("PRESENCE_SWEEP_SECONDS", 2.0, "How often each process renews its heartbeat, clears "
            "the connections of processes that stopped, and makes overdue disconnects final. "
            "Each process also times its own disconnects to the grace period, so this is only "
            "the safety net.", float),
    Setting("GC_FULL_COLLECTION_SECONDS", 3600.0, "How often a server process runs one full "
            "garbage collection over everything, long-lived connection objects included "
            "(about 0.1-0.2 s with thousands of sockets open). In between, objects that "
            "survived are left out of collections to keep pauses short; this returns what "
            "they leaked. 0 turns it off.", float),
    Setting("OUTBOX_CONCURRENCY_PER_ENDPOINT", 16, "EHR write-backs in flight to one EHR at "
            "once, per server process: about 300 a second when the EHR answers in 50 ms. A "
            "slow EHR only ever holds its own slots. Several processes multiply it.", int),
    Setting("OUTBOX_LEASE_SECONDS", 10.0, "A process holds an EHR write-back this long from "
            "when its POST starts, renewed every third of it while the EHR answers. After a "
            "process dies, its write-backs go out again from another process (or the "
            "restarted one) within about this long; `If-None-Exist` keeps the repeat from "
            "creating a second resource.", float),
    Setting("PRESENCE_RESTART_GRACE_SECONDS", 15.0, "After a server process starts, how long it "
            "waits before making any disconnect final, so pages reconnecting after a restart "
            "or deploy (browsers retry up to 5 s apart) keep their presence and nothing false "
            "reaches the EHR.", float),
    Setting("PRESENCE_WRITE_DELAY_SECONDS", 0.1, "Connects and disconnects are written to the "
            "database at most this often, in one transaction each (staff are told at once "
            "either way; other processes read them a batch later). Shorter batches mean more "
            "transactions, each holding up the server's other work while it runs. 0 writes "
            "each at once: slower under load, used by the tests.", float),
    Setting("SOCKET_EVENT_RATE", 20.0, "Socket.IO events one connection may send per second, "
            "sustained (a token bucket per socket). Beyond it events are dropped before any "
            "handler runs and the socket hears `rate_limited`. Pages send far fewer: a call "
            "quality sample every 10 s, pings, ICE candidates when a call starts. 0 turns the "
            "limit off.", float),
    Setting("SOCKET_EVENT_BURST", 200, "Events one connection may send at once before "
            "`VV_SOCKET_EVENT_RATE` applies (the bucket's size): covers a call's start, an offer "
            "or answer and a few dozen ICE candidates per peer.", int),
    Setting("SOCKET_EVENT_DROP_LIMIT", 200, "A connection with more dropped (over-the-limit) "
            "events than this within a minute is disconnected, told first so a browser does "
            "not reconnect on its own. 0 never disconnects.", int),
    Setting("STUN_URLS", "", "Comma-separated STUN URLs given to browsers for calls, e.g. "
            "`stun:turn.example.org:3478`. Empty: none (fine on one network).", _str_or_empty),
    Setting("TURN_URLS", "", "Comma-separated TURN URLs (coturn), e.g. `turn:turn.example.org:3478"
            "?transport=udp,turns:turn.example.org:5349?transport=tcp`. Needed when patients sit "
            "behind strict NATs or firewalls.", _str_or_empty),
    Setting("TURN_SECRET", None, "coturn `static-auth-secret`: browsers get time-limited TURN "
            "credentials derived from it (the TURN REST convention). Secret: environment only.",
            _str_or_none),
    Setting("TURN_TTL_SECONDS", 3600, "How long a browser's TURN credentials stay valid.", int),
    Setting("DEVICE_TEST_CONTEXT_TTL_SECONDS", 604800, "How long a device-test link made for an "
            "appointment (`/device-test?ctx=`) stays valid; after that the test still runs but its "
            "result is stored anonymously and not written back to the EHR.", int),
    Setting("DEVICE_TEST_CALL_SECONDS", 15.0, "Length of the device test's loopback call, split "
            "between the relay-only (TURN) half and the best-path half.", float),
    Setting("DEVICE_TEST_TRANSPORT_TIMEOUT_SECONDS", 5.0, "How long the device test waits for "
            "each STUN/TURN transport; a blocked transport fails silently, so each has its own "
            "timeout.", float),
    Setting("DEVICE_TEST_RTT_MS", "250,400", "Device test round-trip time: below the first is "
            "pass, above the second is fail, between is warn (milliseconds).", grade_pair),
    Setting("DEVICE_TEST_JITTER_MS", "10,30", "Device test jitter pass/fail limits (ms).",
            grade_pair),
    Setting("DEVICE_TEST_LOSS_PCT", "3,8", "Device test packet loss pass/fail limits (percent).",
            grade_pair),
    Setting("DEVICE_TEST_VIDEO_KBPS", "500,150", "Device test video bitrate received: above the "
            "first is pass, below the second is fail (kbps); also grades download and upload "
            "throughput.", grade_pair),
    Setting("DEVICE_TEST_MOS", "3.6,3.1", "Device test estimated MOS: at least the first is "
            "pass, below the second is fail.", grade_pair),
    Setting("STAFF_SSO_ISSUER", None, "OpenID Connect issuer URL of the organization's sign-in "
            "provider (its `/.well-known/openid-configuration` is read). Empty: staff single "
            "sign-on is off, and endpoints that require it refuse launches with a page saying so.",
            _str_or_none),
    Setting("STAFF_SSO_CLIENT_ID", None, "Our client id at that provider (register "
            "`<PUBLIC_BASE_URL>/sso/callback` as its redirect URI).", _str_or_none),
    Setting("STAFF_SSO_CLIENT_SECRET", None, "Our client secret at that provider "
            "(`client_secret_basic` or `client_secret_post`); empty for a public client (PKCE "
            "only). Secret: environment only.", _str_or_none),
    Setting("STAFF_SSO_SCOPES", "openid email profile", "Scopes asked of that provider; must "
            "include `openid`."),
    Setting("LOBBY_CALL_CLINIC_AFTER_MINUTES", 10, "Minutes past a visit's start after which "
            "a patient still in the waiting room is shown the clinic's phone number (the "
            "endpoint's \"clinic phone\"; without one, to call the clinic).", int),
    Setting("JOIN_LINK_RATE_LIMIT", "30 per minute", "Failed join-link guesses one client (IP "
            "address) may make: unknown tokens opened as `/j/<token>` or sent as a socket's "
            "`join_token`, counted together. Beyond it a guess gets 429 (a socket "
            "`too_many_attempts`); a valid link always opens, so a patient on a shared network "
            "is never locked out by someone else's guesses. Flask-Limiter notation, e.g. "
            "`30 per minute;300 per day`. Counted per process in memory, or in Redis (shared "
            "by all processes) when `VV_REDIS_URL` is set."),
    Setting("DEVICE_TEST_RATE_LIMIT", "120 per minute;1000 per hour", "How often one client "
            "may call the device test's throughput probes and results API (a run makes up to "
            "seven calls); beyond it, 429. Caps what an anonymous visitor can make the server "
            "send. Flask-Limiter notation; shared through Redis when `VV_REDIS_URL` is set."),
    Setting("PROXY_COUNT", 0, "How many reverse proxies (nginx, a load balancer) stand in front "
            "of the app. Their `X-Forwarded-For`/`-Proto` headers are then trusted, so rate limits "
            "count each patient rather than the proxy. Leave 0 when clients connect directly.",
            int),
    Setting("PATIENT_LAUNCH_SCOPES", "launch openid fhirUser patient/*.rs", "Scopes asked for when "
            "a patient opens the visit from the portal (MyChart): the launch context, who signed "
            "in, and read access to their own Appointment and Encounter."),
    Setting("SMS_SENDER", "outbox", "`outbox`: texts are stored and listed by `flask sms outbox` "
            "and in the admin, nothing leaves the server (the default, and the demo). `twilio`: "
            "sent through Twilio's API with the `VV_TWILIO_*` settings.", _choice("outbox", "twilio")),
    Setting("TWILIO_ACCOUNT_SID", None, "Twilio account SID (`AC...`), for `VV_SMS_SENDER=twilio`.",
            _str_or_none),
    Setting("TWILIO_AUTH_TOKEN", None, "Twilio auth token; also checks the signature of Twilio's "
            "delivery-status and inbound-message webhooks. Secret: environment only.",
            _str_or_none),
    Setting("TWILIO_FROM_NUMBER", None, "Default sending number (E.164) when an endpoint's SMS "
            "set-up names none.", _str_or_none),
    Setting("TWILIO_API_BASE_URL", "https://api.twilio.com", "Twilio REST API base URL. Change it "
            "only to point at a test double."),
    Setting("SMS_POLL_SECONDS", 5.0, "How often each process looks for texts that are due.", float),
    Setting("SMS_MAX_ATTEMPTS", 5, "Sending attempts before a text is marked failed with its "
            "reason; retries back off exponentially (30 s, 1 min, 2 min, ...).", int),
    Setting("SMS_LEASE_SECONDS", 30.0, "A process holds a text this long from when its send "
            "starts, renewed every third of it while the carrier answers. A text whose "
            "process died is taken over after at most this long; one it was handing to the "
            "carrier is first looked up there, so it is not sent twice. Keep it well above "
            "a database stall.", float),
    Setting("SMS_DEFAULT_REGION", "US", "ISO region for numbers typed without a country code where "
            "no endpoint says otherwise (a provider texting a guest's link)."),
    Setting("ADMIN_IDLE_MINUTES", 15, "An admin session idle this long is signed out.", int),
    Setting("ADMIN_MAX_FAILED_LOGINS", 5, "Consecutive wrong passwords before an admin account is "
            "locked for `VV_ADMIN_LOCKOUT_MINUTES`.", int),
    Setting("ADMIN_LOCKOUT_MINUTES", 15, "How long an admin account stays locked after too many "
            "wrong passwords.", int),
    Setting("REPORTS_HEALTH_ALERT_MINUTES", 15, "The admin home shows a warning when an EHR "
            "write-back has been pending longer than this, or a backend-services token request "
            "for write-backs failed within it (integration health report, `/metrics`).", int),
    Setting("QUALITY_RETENTION_DAYS", 90, "Call-quality samples (every 10 s of every call, "
            "behind the quality report's visit timeline) older than this many days are deleted; "
            "the report's per-person sums stay. `flask reports purge-quality-samples` purges "
            "at once.", int),
    Setting("QUALITY_PURGE_INTERVAL_SECONDS", 3600.0, "How often each server process deletes "
            "call-quality samples past `VV_QUALITY_RETENTION_DAYS`.", float),
    Setting("LOG_LEVEL", "INFO", "Python logging level.", lambda v: str(v).upper()),
    Setting("LOG_FORMAT", "json", "`json` (one object per line, for log shippers) or `text`.",
            _choice("json", "text")),
)

_DEFAULT_SECRETS = {"dev", "development", "secret", "changeme", "change-me", "please-change-me"}


def instance_path(overrides: dict | None = None) -> str | None:
    """The instance folder must be known before Flask() is built, so it is read early."""
    chosen = (overrides or {}).get("INSTANCE_PATH") or os.environ.get(f"{ENV_PREFIX}_INSTANCE_PATH")
    return os.path.abspath(chosen) if chosen else None


def load(app, overrides: dict | None = None) -> None:
    """Fill ``app.config`` from defaults, the environment, then ``overrides``."""
    for setting in SETTINGS:
        app.config[setting.name] = setting.default
    for setting in SETTINGS:
        raw = os.environ.get(setting.env_var)
        if raw is not None:
            app.config[setting.name] = _parse(setting, raw)
    for key, value in (overrides or {}).items():
        known = next((s for s in SETTINGS if s.name == key), None)
        app.config[key] = _parse(known, value) if known and value is not None else value
    _derive(app)


def _parse(setting: Setting, raw: Any) -> Any:
    try:
        return setting.parse(raw)
    except ValueError as exc:
        raise ConfigError(f"{setting.env_var}: {exc}") from None


def _derive(app) -> None:
    """Settings computed from others: database URLs and the development secret."""
    os.makedirs(app.instance_path, exist_ok=True)
    public = app.config["PUBLIC_BASE_URL"] or f"http://{app.config['HOST']}:{app.config['PORT']}"
    app.config["PUBLIC_BASE_URL"] = public.rstrip("/")
    database_url = app.config["DATABASE_URL"] or _sqlite_url(app, "virtual-visits.db")
    app.config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(database_url)
    sandbox_url = app.config["SANDBOX_DATABASE_URL"] or _sqlite_url(app, "sandbox-ehr.db")
    app.config["SQLALCHEMY_BINDS"] = {"sandbox": sqlalchemy_url(sandbox_url)}
    # A pooled PostgreSQL connection that sat idle is tested before use (extensions.py,
    # ``_ping_if_idle``); a SQLite file cannot go away.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {}
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        size = app.config["DATABASE_POOL_SIZE"]
        app.config["SQLALCHEMY_ENGINE_OPTIONS"].update(pool_size=size, max_overflow=size // 2)
    if app.config["SECRET_KEY"] is None and app.config["ENV"] == "development":
        app.config["SECRET_KEY"] = _development_secret(app.instance_path)
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    # SameSite=None keeps the session alive in the EHR's frame; browsers require Secure with it.
    app.config["SESSION_COOKIE_SECURE"] = app.config["PUBLIC_BASE_URL"].startswith("https://")
    app.config["SESSION_COOKIE_SAMESITE"] = "None" if app.config["SESSION_COOKIE_SECURE"] else "Lax"
    # Whenever the cookie is SameSite=None it is also Partitioned (CHIPS): inside a
    # cross-site EHR frame, browsers that block third-party cookies still keep a
    # partitioned one, keyed to the EHR's site. The launch, the visit page and its socket
    # all run in that frame, so they share it; top-level pages see their own.
    app.config["SESSION_COOKIE_PARTITIONED"] = app.config["SESSION_COOKIE_SAMESITE"] == "None"
    # Flask-Limiter: counts in Redis when processes must share them, else in this process.
    app.config["RATELIMIT_STORAGE_URI"] = app.config["REDIS_URL"] or "memory://"
    app.config["RATELIMIT_KEY_PREFIX"] = app.config["REDIS_CHANNEL"]
    app.config["RATELIMIT_HEADERS_ENABLED"] = True


def _sqlite_url(app, filename: str) -> str:
    return "sqlite:///" + os.path.join(app.instance_path, filename)


def sqlalchemy_url(url: str) -> str:
    """Point plain ``postgresql://`` URLs at psycopg 3, the driver we install."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def _development_secret(instance_path: str) -> str:
    path = os.path.join(instance_path, "secret_key")
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except FileNotFoundError:
        pass
    secret = secrets.token_urlsafe(48)
    # O_EXCL: two processes starting at once must not each write a different secret.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secret)
    return secret


def check(config) -> None:
    """Refuse configurations that are unsafe; raise ConfigError with a one-line reason."""
    public = urlsplit(config["PUBLIC_BASE_URL"])
    if public.scheme not in {"http", "https"} or not public.hostname:
        raise ConfigError(f"{ENV_PREFIX}_PUBLIC_BASE_URL must be an http(s) URL, "
                          f"got {config['PUBLIC_BASE_URL']!r}")
    _check_staff_sso(config)
    if config.get("SMS_SENDER") == "twilio" and not (config.get("TWILIO_ACCOUNT_SID")
                                                     and config.get("TWILIO_AUTH_TOKEN")):
        raise ConfigError(f"{ENV_PREFIX}_SMS_SENDER=twilio needs {ENV_PREFIX}_TWILIO_ACCOUNT_SID "
                          f"and {ENV_PREFIX}_TWILIO_AUTH_TOKEN (the token also checks webhooks)")
    if config["ENV"] != "production":
        return
    if config["SANDBOX"]:
        raise ConfigError(f"refusing to start: {ENV_PREFIX}_SANDBOX is on in production; "
                          "the sandbox EHR hands out tokens to anyone")
    secret = config.get("SECRET_KEY")
    if not secret or secret.lower() in _DEFAULT_SECRETS or len(secret) < 32:
        raise ConfigError(f"refusing to start: set {ENV_PREFIX}_SECRET_KEY to a random value of at "
                          "least 32 characters in production (python -c 'import secrets; "
                          "print(secrets.token_urlsafe(48))')")
    if public.scheme != "https" and not is_loopback(public.hostname):
        raise ConfigError(f"refusing to start: {ENV_PREFIX}_PUBLIC_BASE_URL is plain http for "
                          f"{public.hostname}; patients' links and EHR tokens need https")


def _check_staff_sso(config) -> None:
    """An issuer without a client id, or a token sent over plain http, is a setup mistake
    better caught at start-up than by the first clinician who launches."""
    issuer = config.get("STAFF_SSO_ISSUER")
    if not issuer:
        return
    parts = urlsplit(issuer)
    if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query \
            or parts.fragment:
        raise ConfigError(f"{ENV_PREFIX}_STAFF_SSO_ISSUER must be an http(s) URL without query, "
                          f"got {issuer!r}")
    if parts.scheme != "https" and not is_loopback(parts.hostname) \
            and config["ENV"] == "production":
        raise ConfigError(f"refusing to start: {ENV_PREFIX}_STAFF_SSO_ISSUER is plain http for "
                          f"{parts.hostname}; the sign-in provider must use https")
    if not config.get("STAFF_SSO_CLIENT_ID"):
        raise ConfigError(f"{ENV_PREFIX}_STAFF_SSO_ISSUER is set but {ENV_PREFIX}_STAFF_SSO_"
                          "CLIENT_ID is not; set both (and VV_STAFF_SSO_CLIENT_SECRET) or neither")
    if "openid" not in str(config.get("STAFF_SSO_SCOPES") or "").split():
        raise ConfigError(f"{ENV_PREFIX}_STAFF_SSO_SCOPES must include openid")


def is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def markdown_table() -> str:
    """The settings as a Markdown table, for docs/configuration.md."""
    rows = ["| variable | default | what it does |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        default = "(none)" if setting.default is None else f"`{setting.default}`"
        if isinstance(setting.default, bool):
            default = f"`{str(setting.default).lower()}`"
        rows.append(f"| `{setting.env_var}` | {default} | {setting.help} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
