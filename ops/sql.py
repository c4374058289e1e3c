"""SQL that reads the same on SQLite and PostgreSQL."""
from __future__ import annotations

from extensions import db


def upsert(model, key: dict, first: dict, changes: dict) -> None:
    """INSERT ``key`` + ``first``, or on the key's conflict apply ``changes`` (column ->
    expression on the existing row): one statement on SQLite and PostgreSQL."""
    from sqlalchemy.dialects import postgresql, sqlite

    insert = (postgresql.insert if db.session.get_bind().dialect.name == "postgresql"
              else sqlite.insert)(model.__table__)
    db.session.execute(insert.values({**key, **first}).on_conflict_do_update(
        index_elements=list(key), set_=changes))
