"""Auth.principal reads a credential, its user and its organisation in one statement, on every
call: what another transaction (or another process: ``tether admin``) committed counts from the
very next request — a revoked token, a lowered role, a policy turned off, a user or org gone."""

from __future__ import annotations

import contextlib
import pathlib
import sqlite3
from collections.abc import AsyncIterator

import pytest
from tests.support.services import fresh_database

from tether.errors import AuthenticationFailed
from tether.server.auth.secrets import hash_secret
from tether.server.auth.service import Auth
from tether.server.config import Config
from tether.server.store import Store

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def opened(url: str, data_dir: pathlib.Path) -> AsyncIterator[Auth]:
    cfg = Config(data_dir=data_dir)
    store = Store(url)
    await store.open()
    auth = Auth(cfg, store)
    await auth.open()
    try:
        yield auth
    finally:
        await store.close()


@pytest.fixture(params=["sqlite", "postgres"])
async def auth(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> AsyncIterator[Auth]:
    """SQLite reads the credential with plain pysqlite, PostgreSQL with the Core statement."""
    if request.param == "sqlite":
        async with opened(Config(data_dir=tmp_path).db_url, tmp_path) as auth:
            yield auth
    else:
        with fresh_database() as url:
            async with opened(url, tmp_path) as auth:
                yield auth


@pytest.fixture
async def sqlite_auth(tmp_path: pathlib.Path) -> AsyncIterator[Auth]:
    async with opened(Config(data_dir=tmp_path).db_url, tmp_path) as auth:
        yield auth


async def member_token(auth: Auth, role: str = "member") -> tuple[str, str, str]:
    """(secret, user id, org id) of a new personal token of a new user in a new org."""
    async with auth.store.write() as tx:
        org, user, _ = await auth.ensure_owner(tx, org_name=f"org-{role}", email=f"{role}@x", role=role)
        issued = await auth.issue(tx, "personal", user, ttl=None, name="t")
    return issued.secret, user.id, org.id


async def test_principal_is_the_token_its_user_and_org(auth: Auth) -> None:
    secret, user_id, org_id = await member_token(auth)
    p = await auth.principal(secret)
    assert (p.user_id, p.org_id, p.role, p.email, p.kind, p.allow_remote_control) == \
        (user_id, org_id, "member", "member@x", "personal", True)
    async with auth.store.read() as tx:
        row = await tx.tokens.by_hash(hash_secret(secret))
    assert row is not None and p.token_id == row.id


async def test_role_policy_and_revocation_count_at_the_next_call(auth: Auth) -> None:
    secret, user_id, org_id = await member_token(auth)
    assert (await auth.principal(secret)).can_write
    async with auth.store.write() as tx:
        await tx.users.update(user_id, role="viewer")
    assert not (await auth.principal(secret)).can_write
    async with auth.store.write() as tx:
        await tx.orgs.set_policy(org_id, False)
    assert not (await auth.principal(secret)).allow_remote_control
    p = await auth.principal(secret)
    async with auth.store.write() as tx:
        await tx.tokens.update(p.token_id, revoked=True)
    with pytest.raises(AuthenticationFailed, match="revoked"):
        await auth.principal(secret)


async def test_unknown_wrong_kind_and_expired(auth: Auth) -> None:
    secret, _, _ = await member_token(auth)
    with pytest.raises(AuthenticationFailed, match="not recognised"):
        await auth.principal(secret[:-4] + "AAAA")
    with pytest.raises(AuthenticationFailed, match="needs a web session"):
        await auth.principal(secret, kinds=("web_session",))
    async with auth.store.write() as tx:
        user = await tx.users.by_email("member@x")
        expired = await auth.issue(tx, "personal", user, ttl=-60, name="old")
    with pytest.raises(AuthenticationFailed, match="expired"):
        await auth.principal(expired.secret)


async def test_a_gone_user_or_org_is_refused(sqlite_auth: Auth) -> None:
    auth = sqlite_auth
    secret, user_id, org_id = await member_token(auth)
    assert auth.store.sync_engine is not None
    db = sqlite3.connect(str(auth.store.sync_engine.url.database))  # foreign keys off: no route deletes these
    try:
        db.execute("DELETE FROM orgs WHERE id = ?", (org_id,))
        db.commit()
        with pytest.raises(AuthenticationFailed, match="organisation no longer exists"):
            await auth.principal(secret)
        db.execute("DELETE FROM users WHERE id = ?", (user_id,))
        db.commit()
        with pytest.raises(AuthenticationFailed, match="user no longer exists"):
            await auth.principal(secret)
    finally:
        db.close()
