"""Persistence: SQLAlchemy Core tables, Alembic migrations, and the transaction API."""

from tether.server.store.records import EventIn, StoredEvent
from tether.server.store.store import Store, sqlite_url
from tether.server.store.tx import Tx

__all__ = ["EventIn", "Store", "StoredEvent", "Tx", "sqlite_url"]
