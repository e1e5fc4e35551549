"""The event append and the audit row (in SQLite write transactions) and the credential read
(one statement on ``Store.sqlite_statement``) as plain pysqlite calls.

Every event a worker posts runs the same four statements (read the session row, look up
the posted uuids, insert the events, advance ``last_seq``). Through SQLAlchemy Core each
costs ≈ 45 µs of execution-context bookkeeping around ≈ 10 µs of SQLite work on the
benchmark machine; issued on the same DBAPI connection, inside the transaction SQLAlchemy
began, they cost what SQLite costs. The session row comes back as the same
``SessionRecord`` SQLAlchemy's path builds (JSON columns decoded, booleans as ``bool``), so callers
cannot tell the difference — ``tests/server/store/test_sqlite_fast.py`` holds the two paths to that.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from tether.server.store import tables as t
from tether.server.store.records import OrgRecord, SessionRecord, StoredEvent, TokenRecord, UserRecord

Converted = list[tuple[int, str]]


def _converted(table: sa.Table) -> Converted:
    """(index, decode) of the columns SQLAlchemy would convert: JSON text → value, 0/1 → bool."""
    return [(i, "json" if isinstance(c.type, sa.JSON) else "bool") for i, c in enumerate(table.c)
            if isinstance(c.type, sa.JSON | sa.Boolean)]


def _decoded(values: list[Any], converted: Converted) -> list[Any]:
    for index, kind in converted:
        value = values[index]
        if kind == "json":
            # a top-level JSON number comes back as a number (the column has NUMERIC affinity)
            if isinstance(value, str | bytes):
                values[index] = json.loads(value)
        elif value is not None:
            values[index] = bool(value)
    return values


_SESSION_COLUMNS = [c.name for c in t.sessions.c]
_CONVERTED = _converted(t.sessions)
# a credential with its user and that user's organisation (NULLs where gone), in one statement
_CREDENTIAL_TABLES = (t.tokens, t.users, t.orgs)
_CREDENTIAL_CONVERTED = [_converted(table) for table in _CREDENTIAL_TABLES]
_CREDENTIAL = (f"SELECT {', '.join(f'{table.name}.{c.name}' for table in _CREDENTIAL_TABLES for c in table.c)} "
               "FROM tokens LEFT JOIN users ON users.id = tokens.user_id "
               "LEFT JOIN orgs ON orgs.id = users.org_id WHERE tokens.secret_hash = ?")
_GET_SESSION = f"SELECT {', '.join(_SESSION_COLUMNS)} FROM sessions WHERE id = ?"
_INSERT_EVENTS = ("INSERT INTO events (session_id, seq, event_id, uuid, source, event_type, payload, delivery, "
                  "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
_INSERT_EVENT_UNLESS_LOGGED = _INSERT_EVENTS + " ON CONFLICT (session_id, uuid) DO NOTHING"
_ADVANCE_SEQ = "UPDATE sessions SET last_seq = ?, updated_at = ? WHERE id = ?"
_INSERT_AUDIT = "INSERT INTO audit (org_id, actor, action, target, detail, at) VALUES (?, ?, ?, ?, ?, ?)"
_CHUNK = 500  # bound parameters per uuid lookup (SQLite allows 32766; this keeps plans small)


def get_session(db: sqlite3.Connection, body: str) -> SessionRecord | None:
    row = db.execute(_GET_SESSION, (body,)).fetchone()
    if row is None:
        return None
    return SessionRecord(*_decoded(list(row), _CONVERTED))  # the record's fields are the table's columns, in order


def credential(db: sqlite3.Connection, secret_hash: str) -> tuple[TokenRecord, UserRecord | None,
                                                                  OrgRecord | None] | None:
    """The token of ``secret_hash``, its user and the user's organisation (None where gone).
    One statement: on a read connection outside a transaction it is its own snapshot."""
    row = db.execute(_CREDENTIAL, (secret_hash,)).fetchone()
    if row is None:
        return None
    parts, start = [], 0
    for table, converted in zip(_CREDENTIAL_TABLES, _CREDENTIAL_CONVERTED, strict=True):
        width = len(table.c)
        parts.append(_decoded(list(row[start:start + width]), converted))
        start += width
    token, user, org = parts
    return (TokenRecord(*token), None if user[0] is None else UserRecord(*user),
            None if org[0] is None else OrgRecord(*org))


def existing_uuids(db: sqlite3.Connection, session_id: str, uuids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(uuids), _CHUNK):
        chunk = uuids[start:start + _CHUNK]
        sql = f"SELECT uuid FROM events WHERE session_id = ? AND uuid IN ({', '.join('?' * len(chunk))})"
        found.update(r[0] for r in db.execute(sql, (session_id, *chunk)))
    return found


def _row(ev: StoredEvent) -> tuple[Any, ...]:
    """``ev`` in the column order of ``_INSERT_EVENTS``."""
    return (ev.session_id, ev.seq, ev.event_id, ev.uuid, ev.source, ev.event_type, ev.payload_json, ev.delivery,
            ev.created_at)


def insert_event(db: sqlite3.Connection, ev: StoredEvent) -> bool:
    """One event, unless its ``uuid`` is already in the session's log (then False): one
    statement instead of a lookup and an insert. Any other conflict still raises."""
    if db.execute(_INSERT_EVENT_UNLESS_LOGGED, _row(ev)).rowcount == 0:
        return False
    db.execute(_ADVANCE_SEQ, (ev.seq, ev.created_at, ev.session_id))
    return True


def insert_events(db: sqlite3.Connection, events: Sequence[StoredEvent]) -> None:
    """New events of one session, in sequence order; then the session's ``last_seq``."""
    db.executemany(_INSERT_EVENTS, [_row(ev) for ev in events])
    last = events[-1]
    db.execute(_ADVANCE_SEQ, (last.seq, last.created_at, last.session_id))


def insert_audit(db: sqlite3.Connection, row: tuple[str, str, str, str | None, Any, float]) -> None:
    """One audit row (org_id, actor, action, target, detail, at); ``detail`` stored as
    SQLAlchemy's JSON column stores it (``json.dumps``, so None is the JSON ``null``)."""
    org_id, actor, action, target, detail, at = row
    db.execute(_INSERT_AUDIT, (org_id, actor, action, target, json.dumps(detail), at))
