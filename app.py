"""Virtual Visits application factory; ``python app.py`` serves it under gevent."""
if __name__ == "__main__":
    # Patch before anything imports socket, ssl or threading. Only here and in the
    # gunicorn worker: never under pytest, whose tests run in threading mode.
    from gevent import monkey

    monkey.patch_all()

import functools  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import types  # noqa: E402

from flask import Flask  # noqa: E402

import settings  # noqa: E402
from extensions import babel, db, limiter, migrate, socketio  # noqa: E402

# Absolute, so `flask db upgrade` works from any working directory.
MIGRATIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "migrations")


class VirtualVisits(Flask):
    """Flask, minus a question asked again on every request: for each hook and view (16 on
    the join page), whether it is a coroutine function. For a function the answer never
    changes, so it is kept, by the function; anything else is asked as before."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._plain_functions: set = set()

    def ensure_sync(self, func):
        if func in self._plain_functions:
            return func
        wrapped = super().ensure_sync(func)
        if wrapped is func and isinstance(func, (types.FunctionType, functools.partial)):
            self._plain_functions.add(func)
        return wrapped


def create_app(config: dict | None = None) -> Flask:
    """Build the app: settings, logging, storage, features, then Socket.IO."""
    app = VirtualVisits(__name__, instance_relative_config=True,
                instance_path=settings.instance_path(config))
    settings.load(app, config)
    settings.check(app.config)

    from ops import logs

    logs.configure(app)

    from extensions import CachedSigningSessionInterface

    app.session_interface = CachedSigningSessionInterface()
    db.init_app(app)
    migrate.init_app(app, db, directory=MIGRATIONS, render_as_batch=True)

    from ops import i18n

    babel.init_app(app, locale_selector=i18n.selected_locale)
    i18n.init_app(app)
    limiter.init_app(app)

    # Features register their Socket.IO handlers at import time; that must happen before
    # socketio.init_app() so the handlers are replayed for every app the factory builds.
    import admin
    import device_test
    import ehr
    import hl7feed
    import notifications
    import ops
    import patient_join
    import provider_launch
    import reports  # noqa: F401  (nests its blueprint in admin's: before admin's registration)
    import staff_sso
    import visits  # noqa: F401  (models must be imported for Alembic and create_all)

    app.register_blueprint(ops.bp)
    app.register_blueprint(patient_join.bp)
    app.register_blueprint(provider_launch.bp)
    app.register_blueprint(device_test.bp)
    app.register_blueprint(ehr.bp)
    app.register_blueprint(hl7feed.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(staff_sso.bp)
    if app.config["SANDBOX"]:
        import sandbox_ehr

        sandbox_ehr.init_app(app)
    from ehr import outbox

    outbox.init_app(app)  # its defaults; importing it also registers the delivery loop
    _register_cli(app)
    from ops import compression, static_assets

    # After every blueprint: their static folders are fingerprinted too (docs/patient-join.md).
    compression.init_app(app)
    static_assets.init_app(app)

    from ops import transport

    # Always explicit, because the SocketIO object outlives one app: an app built after a
    # Redis-backed one (tests build many) must not inherit its message queue.
    socketio.init_app(
        app,
        async_mode=app.config["ASYNC_MODE"],
        # Same-origin only; the EHR embeds our pages, it never opens our socket itself.
        cors_allowed_origins=[app.config["PUBLIC_BASE_URL"]],
        message_queue=app.config["REDIS_URL"],
        client_manager=transport.client_manager(app.config["REDIS_URL"],
                                                app.config["REDIS_CHANNEL"]),
    )
    from visits import chat

    chat.init_app(app)  # shared through Redis when there is one
    from ops import socket_limits

    # A token bucket per socket, in front of every event handler (docs/realtime.md).
    socket_limits.install(socketio.server, rate=app.config["SOCKET_EVENT_RATE"],
                          burst=app.config["SOCKET_EVENT_BURST"],
                          drop_limit=app.config["SOCKET_EVENT_DROP_LIMIT"])
    if app.config["PROXY_COUNT"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        # Trust exactly that many hops: the client address is then the patient's, not
        # nginx's. Outermost, around the Socket.IO middleware too, so a socket's handshake
        # (and the rate limits that read it) sees the same address as a page request.
        count = app.config["PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count, x_proto=count)
    return app


def _register_cli(app: Flask) -> None:
    """The operational `flask` commands, grouped per area (see DESIGN.md's contract)."""
    from admin.cli import admin_cli
    from ehr.cli import endpoints_cli
    from ehr.keys_cli import keys_cli
    from ehr.outbox_cli import outbox_cli
    from hl7feed.cli import certs_cli, hl7_cli
    from notifications.cli import sms_cli
    from ops.cli import static_cli
    from reports.cli import reports_cli
    from sandbox_ehr.cli import demo_command, sandbox_cli
    from visits.cli import appointments_cli, links_cli

    # `demo` and `sandbox seed` are registered even with the sandbox off, so they can say
    # how to turn it on.
    for command in (admin_cli, endpoints_cli, certs_cli, hl7_cli, keys_cli, outbox_cli,
                    appointments_cli, links_cli, sms_cli, reports_cli, demo_command, sandbox_cli,
                    static_cli):
        app.cli.add_command(command)


def main() -> None:
    """Serve on VV_HOST:VV_PORT with gevent and real WebSockets."""
    from ops.server import serve

    try:
        app = create_app()
    except settings.ConfigError as exc:
        print(f"virtual-visits: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    serve(app)


if __name__ == "__main__":
    main()
