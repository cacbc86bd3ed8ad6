"""Alembic environment: runs the store's migrations on the connection `sinks.store` hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from sinks.models import metadata

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is None:  # the `alembic` command line, for developers
        engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite:///abusepipe.sqlite3")
        with engine.begin() as conn:
            _migrate(conn)
        return
    _migrate(connection)


def _migrate(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
