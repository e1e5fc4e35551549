"""One repository per aggregate, bound to a transaction's connection (``Tx``), returning frozen
records (``store/records.py``). SQL stays in SQLAlchemy Core (one schema for SQLite and PostgreSQL);
only the event append runs as plain pysqlite on SQLite (``sqlite_fast.py``)."""
