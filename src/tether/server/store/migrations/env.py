"""Alembic environment: migrations run on a connection handed in by tether.server.store.migrate."""

from __future__ import annotations

from alembic import context

from tether.server.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only for `alembic revision --autogenerate` by developers
    import sqlalchemy as sa

    url = context.config.get_main_option("sqlalchemy.url") or "sqlite://"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
