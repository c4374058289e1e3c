"""Alembic environment for ``flask db``: the app's default database only.

The sandbox EHR's tables (``__bind_key__ = "sandbox"``) live in their own metadata and
their own database, created by the sandbox itself; they are deliberately not migrated.
"""
from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import context
from flask import current_app

config = context.config

# No logging.config.fileConfig(alembic.ini) here: the app has already configured logging
# (ops/logs.py), and fileConfig would replace the root handler and disable every logger
# created so far. Only alembic's own level comes from alembic.ini (WARN: quiet upgrades;
# set INFO there to see what `flask db migrate` detects).
logging.getLogger("alembic").setLevel(
    config.get_section_option("logger_alembic", "level", default="WARN"))
logger = logging.getLogger("alembic.env")

target_db = current_app.extensions["migrate"].db


def get_engine() -> sa.Engine:
    return target_db.engine


def get_metadata() -> sa.MetaData:
    """The default bind's metadata (Flask-SQLAlchemy keeps one per bind)."""
    return target_db.metadatas[None]


def render_item(type_: str, obj, autogen_context):
    """Write our TypeDecorators (``UTCDateTime``) as their plain SQL type.

    A migration describes the schema at one point in time; importing model code would
    tie old revisions to whatever that code becomes later.
    """
    if type_ == "type" and isinstance(obj, sa.types.TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


config.set_main_option(
    "sqlalchemy.url", get_engine().url.render_as_string(hide_password=False).replace("%", "%%"))


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``flask db upgrade --sql``) instead of running it."""
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=get_metadata(),
        literal_binds=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on a connection from the app's engine."""

    def process_revision_directives(context, revision, directives):
        # `flask db migrate` with no model changes writes no empty revision.
        if getattr(config.cmd_opts, "autogenerate", False):
            script = directives[0]
            if script.upgrade_ops.is_empty():
                directives[:] = []
                logger.warning("No changes in schema detected.")

    conf_args = dict(current_app.extensions["migrate"].configure_args)
    conf_args.setdefault("process_revision_directives", process_revision_directives)
    conf_args.setdefault("render_item", render_item)

    with get_engine().connect() as connection:
        if connection.dialect.name == "sqlite":
            # Batch mode rebuilds a table by copy, drop and rename; with foreign keys on,
            # the drop would cascade-delete every child row. The pragma only takes effect
            # outside a transaction, hence before begin_transaction().
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()  # end the transaction SQLAlchemy began for the pragma
        context.configure(connection=connection, target_metadata=get_metadata(), **conf_args)
        with context.begin_transaction():
            context.run_migrations()
        if connection.dialect.name == "sqlite":
            # The connection goes back to the pool: restore what extensions.py set up.
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
