"""sqlite_fast against SQLAlchemy Core: the plain pysqlite statements of a SQLite write
transaction must read and write exactly what the Core statements of a read transaction see."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tether.protocol.ids import SessionId
from tether.server.store import sqlite_fast
from tether.server.store import tables as t
from tether.server.store.records import EventIn, OrgRecord, SessionRecord, TokenRecord, UserRecord
from tether.server.store.store import Store, sqlite_url

Row = dict[str, Any]

pytestmark = pytest.mark.anyio

NESTED = {"repo": {"url": "https://x/y.git", "branches": ["main", "dev"]}, "n": [1, 2.5, None, True],
          "deep": {"a": {"b": {"c": [[], {}, ""]}}}, "big": 2**70, "tiny": 1e-300, "neg0": -0.0}
UNICODE = {"título": "naïve ☃ 😀 日本語", "esc": "quote\" back\\slash \n\t \u0000", "list": ["ü", "€"]}


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, str]]:
    """One migrated SQLite file for the module (tests use their own sessions) and an org id."""
    store = Store(sqlite_url(tmp_path_factory.mktemp("fast") / "db.sqlite"))

    async def setup() -> str:
        await store.open()
        async with store.write() as tx:
            return (await tx.orgs.insert("fast-org", 1.0)).id

    org_id = asyncio.run(setup())
    yield store, org_id
    asyncio.run(store.close())


def session_row(org_id: str, **values: Any) -> Row:
    row: Row = {
        "id": uuid.uuid4().hex, "org_id": org_id, "user_id": None, "environment_id": None, "kind": "env",
        "title": "", "title_explicit": False, "status": "idle", "source": None, "permission_mode": None,
        "session_context": None, "tags": None, "worker_epoch": 0, "worker_status": None,
        "worker_last_seen": None, "external_metadata": None, "internal_metadata": None, "last_seq": 0,
        "created_at": 100.25, "updated_at": 100.25, "archived_at": None, "archive_reason": None,
        "successor_id": None,
    }
    row.update(values)
    return row


async def insert(store: Store, row: Row) -> str:
    async with store.write() as tx:
        await tx.sessions.insert(SessionRecord(**row))
    return str(row["id"])


async def both_paths(store: Store, body: str) -> tuple[SessionRecord | None, SessionRecord | None]:
    async with store.write() as tx:
        assert tx.raw is not None
        raw = await tx.sessions.get(body)
    async with store.read() as tx:
        assert tx.raw is None
        core = await tx.sessions.get(body)
    return raw, core


def assert_same(raw: SessionRecord | None, core: SessionRecord | None) -> None:
    assert raw is not None and core is not None
    for key in SessionRecord.__dataclass_fields__:
        value = getattr(core, key)
        assert type(getattr(raw, key)) is type(value), key
        assert getattr(raw, key) == value, key
        assert repr(getattr(raw, key)) == repr(value), key  # nested types too: 1 vs 1.0 vs True, key order


def test_a_session_record_has_the_table_columns_in_order() -> None:
    """sqlite_fast builds the record positionally from the row."""
    assert list(SessionRecord.__dataclass_fields__) == [c.name for c in t.sessions.c]


CASES: list[dict[str, Any]] = [
    {},  # every nullable column None
    {"session_context": {}, "tags": [], "external_metadata": {}, "internal_metadata": {}},
    {"session_context": NESTED, "tags": ["a", "b"], "external_metadata": UNICODE, "title": "Ünïcode ☃",
     "title_explicit": True, "archived_at": 1234.5, "worker_last_seen": 99.125, "worker_status": "connected",
     "worker_epoch": 7, "last_seq": 42, "user_id": "user_1", "environment_id": "env_1", "source": "cli",
     "permission_mode": "plan", "kind": "code", "status": "running", "internal_metadata": {"k": [1, {"v": 2}]}},
    {"session_context": "5", "tags": True, "external_metadata": "text", "internal_metadata": False},
    {"created_at": 5, "updated_at": 6, "archived_at": 7, "worker_last_seen": 0},  # ints in Float columns
    {"title_explicit": True, "archived_at": 0.0, "session_context": [None, [None]]},
]


@pytest.mark.parametrize("values", CASES)
async def test_get_session_matches_core(db: tuple[Store, str], values: dict[str, Any]) -> None:
    store, org_id = db
    row = session_row(org_id, **values)
    raw, core = await both_paths(store, await insert(store, row))
    assert_same(raw, core)
    assert core is not None
    for key in ("session_context", "tags", "external_metadata", "internal_metadata", "title_explicit"):
        assert getattr(core, key) == row[key]


async def test_missing_session_is_none_on_both_paths(db: tuple[Store, str]) -> None:
    assert await both_paths(db[0], "no-such-session") == (None, None)


async def test_raw_reads_see_the_uncommitted_rows_of_their_transaction(db: tuple[Store, str]) -> None:
    store, org_id = db
    row = session_row(org_id, session_context={"x": 1})
    async with store.write() as tx:
        await tx.sessions.insert(SessionRecord(**row))  # through SQLAlchemy, on the same connection
        seen = await tx.sessions.get(row["id"])
    assert seen is not None and seen.session_context == {"x": 1}


@pytest.mark.parametrize("value", [5, 1.5])
async def test_top_level_json_number(db: tuple[Store, str], value: float) -> None:
    store, org_id = db
    assert_same(*await both_paths(store, await insert(store, session_row(org_id, session_context=value))))


def event(uid: str, n: int = 0) -> EventIn:
    return EventIn(uid, "worker", "assistant", {"n": n}, f'{{"n": {n}, "uuid": "{uid}"}}',
                   "pending" if n % 2 else None)


async def append(store: Store, body: str, items: list[EventIn], now: float) -> list[tuple[int, str]]:
    async with store.write() as tx:
        session = await tx.sessions.get(body, for_update=True)
        assert session is not None
        stored = await tx.events.append(session.id, session.last_seq, items, now)
        after = await tx.sessions.get(body)
        assert after is not None and after.last_seq == (stored[-1].seq if stored else session.last_seq)
    return [(ev.seq, ev.uuid) for ev in stored]


async def test_existing_uuids_crosses_the_chunk_boundary(db: tuple[Store, str]) -> None:
    store, org_id = db
    body, other = await insert(store, session_row(org_id)), await insert(store, session_row(org_id))
    stored = [f"s-{i}" for i in range(700)]
    await append(store, body, [event(u) for u in stored], 1.0)
    await append(store, other, [event(f"o-{i}") for i in range(50)], 1.0)
    # stored and unknown uuids interleaved, on both sides of every 500-boundary, plus another session's
    query = [u for i, s in enumerate(stored) for u in (s, f"unknown-{i}")] + [f"o-{i}" for i in range(50)]
    assert len(query) > 2 * sqlite_fast._CHUNK
    async with store.write() as tx:
        assert tx.raw is not None
        raw = sqlite_fast.existing_uuids(tx.raw, body, query)
        assert sqlite_fast.existing_uuids(tx.raw, body, stored[:501]) == set(stored[:501])
        assert sqlite_fast.existing_uuids(tx.raw, body, []) == set()
    async with store.read() as tx:
        core = await tx.events.existing_uuids(body, query)
    assert raw == core == set(stored)


async def test_append_events_dedups_numbers_gap_free_and_rolls_back(db: tuple[Store, str]) -> None:
    store, org_id = db
    body = await insert(store, session_row(org_id))
    assert await append(store, body, [event("a", 1), event("b", 2), event("a", 3), event("c", 4)], 10.0) \
        == [(1, "a"), (2, "b"), (3, "c")]
    assert await append(store, body, [event("b"), event("d", 5), event("d"), event("e", 6)], 11.0) \
        == [(4, "d"), (5, "e")]
    assert await append(store, body, [event("a"), event("e")], 12.0) == []

    async def log() -> tuple[list[tuple[int, str, str, str | None, float]], SessionRecord | None]:
        async with store.read() as tx:
            events = await tx.events.after(body, 0)
            return [(e.seq, e.uuid, e.payload_json, e.delivery, e.created_at) for e in events], \
                await tx.sessions.get(body)

    events, session = await log()
    assert events == [(1, "a", event("a", 1).payload_json, "pending", 10.0),
                      (2, "b", event("b", 2).payload_json, None, 10.0),
                      (3, "c", event("c", 4).payload_json, None, 10.0),
                      (4, "d", event("d", 5).payload_json, "pending", 11.0),
                      (5, "e", event("e", 6).payload_json, None, 11.0)]
    assert session is not None and (session.last_seq, session.updated_at) == (5, 11.0)

    with pytest.raises(RuntimeError, match="abort"):
        async with store.write() as tx:
            row = await tx.sessions.get(body)
            assert row is not None
            assert len(await tx.events.append(SessionId(body), row.last_seq, [event("x"), event("y")], 13.0)) == 2
            raise RuntimeError("abort")
    assert await log() == (events, session)
    assert await append(store, body, [event("y"), event("x")], 14.0) == [(6, "y"), (7, "x")]


json_leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=16)
# top-level: what the API stores (objects, lists) and any scalar
top_level = st.dictionaries(st.text(max_size=8), json_value, max_size=5) | st.lists(json_value, max_size=5) \
    | json_leaf


@settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(context=top_level, metadata=top_level)
async def test_random_json_reads_identically(db: tuple[Store, str], context: Any, metadata: Any) -> None:
    store, org_id = db
    body = await insert(store, session_row(org_id, session_context=context, external_metadata=metadata))
    raw, core = await both_paths(store, body)
    assert_same(raw, core)
    assert core is not None
    # Exact round trip for what the API stores (objects and lists) and for strings, booleans and
    # null. A bare top-level number is stored by SQLite as a number (a JSON column has NUMERIC
    # affinity): a float may come back one ulp off, a huge integer as a float; both read paths
    # must still agree on it (assert_same above).
    for stored, given_value in ((core.session_context, context), (core.external_metadata, metadata)):
        if isinstance(given_value, (int, float)) and not isinstance(given_value, bool):
            assert stored == pytest.approx(given_value, rel=1e-15)
        else:
            assert stored == given_value



AUDIT_DETAILS: list[Any] = [None, {"uuid": "u-1"}, {"request_id": None}, UNICODE, NESTED]


@pytest.mark.parametrize("detail", AUDIT_DETAILS)
async def test_audit_rows_read_back_as_the_core_insert_wrote_them(db: tuple[Store, str], detail: Any) -> None:
    """A prompt's audit row goes through pysqlite in a SQLite write transaction; what the audit
    log reads back must equal a row SQLAlchemy wrote (the column's JSON, None included)."""
    store, _ = db
    org_id = f"org-audit-{uuid.uuid4().hex}"
    async with store.write() as tx:
        assert tx.audit.raw is not None
        await tx.audit.insert(org_id, "user_1", "session.prompt", "session_x", detail, 10.5)
    async with store.write() as tx:
        tx.audit.raw = None  # the same insert through SQLAlchemy Core
        await tx.audit.insert(org_id, "user_1", "session.prompt", "session_x", detail, 10.5)
    async with store.read() as tx:
        core_row, raw_row = await tx.audit.of_org(org_id, 10, None)  # newest first
        stored = (await tx.conn.exec_driver_sql("SELECT detail FROM audit WHERE org_id = ? ORDER BY pk",
                                                (org_id,))).all()
    raw_text, core_text = (r[0] for r in stored)
    assert raw_text == core_text  # the same text in the column
    for field in ("org_id", "actor", "action", "target", "detail", "at"):
        assert getattr(raw_row, field) == getattr(core_row, field), field
    assert repr(raw_row.detail) == repr(detail)


def test_credential_records_have_the_table_columns_in_order() -> None:
    """sqlite_fast.credential builds the three records positionally from one joined row."""
    assert list(TokenRecord.__dataclass_fields__) == [c.name for c in t.tokens.c]
    assert list(UserRecord.__dataclass_fields__) == [c.name for c in t.users.c]
    assert list(OrgRecord.__dataclass_fields__) == [c.name for c in t.orgs.c]


TOKEN_CASES: list[dict[str, Any]] = [
    {},
    {"revoked": True, "expires_at": 5.5, "last_used_at": 7, "extra": {"family": "f", "n": [1, None]},
     "lookup": "ABCD-EFGH", "name": "Ünïcode ☃"},
    {"user_id": None},  # a device code nobody approved yet: no user, no org
    {"user_id": "user-gone"},  # a user deleted by hand (foreign keys do not cover tokens.user_id)
]


@pytest.mark.parametrize("values", TOKEN_CASES)
async def test_credential_matches_core(db: tuple[Store, str], values: dict[str, Any]) -> None:
    store, org_id = db
    tag = uuid.uuid4().hex
    async with store.write() as tx:
        org = await tx.orgs.insert(f"cred-{tag}", 3.0)
        await tx.orgs.set_policy(org.id, False)
        user = await tx.users.insert(org.id, f"{tag}@x", "viewer", 4.0)
        row = {"kind": "personal", "secret_hash": tag, "org_id": org.id, "user_id": user.id, "name": None,
               "expires_at": None, "created_at": 6.0, "extra": None, "lookup": None, **values}
        revoked, last_used = row.pop("revoked", False), row.pop("last_used_at", None)
        token = await tx.tokens.insert(**row)
        await tx.tokens.update(token.id, revoked=revoked, last_used_at=last_used)
    conn = store.sqlite_statement()  # as Auth.principal reads it on SQLite
    raw = sqlite_fast.credential(conn, tag)
    assert sqlite_fast.credential(conn, "no-such-hash") is None
    assert not conn.in_transaction  # nothing left open to hold a checkpoint back
    async with store.read() as tx:  # the same read through SQLAlchemy Core (PostgreSQL's path)
        core = await tx.tokens.credential(tag)
        assert await tx.tokens.credential("no-such-hash") is None
    assert raw is not None and core is not None
    for got, want in zip(raw, core, strict=True):
        assert repr(got) == repr(want)  # types too: bool vs int, dict vs JSON text
    assert raw[0].revoked is revoked and raw[0].extra == values.get("extra")
    if raw[1] is not None:
        assert raw[2] is not None and raw[2].allow_remote_control is False and raw[1].role == "viewer"
