"""Extension objects, created unbound here and bound in ``create_app()``.

Features import these from here, never from ``app.py``: run as ``python app.py`` that
module is ``__main__``, and importing it again would build a second, unserved SocketIO.
"""
from __future__ import annotations

from flask_babel import Babel
from flask_migrate import Migrate
from flask_socketio import SocketIO
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import MetaData
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


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
socketio = SocketIO()
babel = Babel()
