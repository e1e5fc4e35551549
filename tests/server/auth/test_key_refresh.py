"""Two `Auth`s on one database (two instances, or a server and `tether admin`): a rotation or a
retirement made by one reaches the other when it re-reads the keys (auth/service.py)."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator

import pytest

from tether.errors import AuthenticationFailed, Conflict, NotFound
from tether.server.auth.service import Auth
from tether.server.config import Config
from tether.server.store import Store

pytestmark = pytest.mark.anyio


@pytest.fixture
async def pair(tmp_path: pathlib.Path) -> AsyncIterator[tuple[Auth, Auth]]:
    config = Config(data_dir=tmp_path)
    stores = [Store(config.db_url), Store(config.db_url)]
    for store in stores:
        await store.open()
    a, b = Auth(config, stores[0]), Auth(config, stores[1])
    await a.open()
    await b.open()
    try:
        yield a, b
    finally:
        for store in stores:
            await store.close()


def mint(auth: Auth) -> str:
    assert auth.keys is not None
    token, _ = auth.keys.mint(session_body="s1", org_id="o1", environment_id=None, epoch=1, work_id=None,
                              now=time.time(), ttl=600)
    return token


async def test_a_rotation_reaches_the_other_instance_when_it_re_reads(pair: tuple[Auth, Auth]) -> None:
    a, b = pair
    assert b.keys is not None
    old_kid = b.keys.active_kid
    announced: list[bool] = []
    a.announce = lambda: announced.append(True)
    new_kid = await a.rotate_keys()
    assert announced == [True]
    with pytest.raises(AuthenticationFailed, match="unknown key"):
        b.worker_for_session(mint(a), "s1")  # B holds the old ring until it re-reads
    changes = await b.refresh_keys()
    assert changes.added == {new_kid} and changes.active_changed and not changes.retired
    assert b.keys.active_kid == new_kid and b.worker_for_session(mint(a), "s1").kid == new_kid
    assert not (await b.refresh_keys()).any  # nothing new the second time
    assert old_kid in b.keys.keys  # the old key still verifies


async def test_a_retired_key_stops_verifying_and_its_streams_close(pair: tuple[Auth, Auth]) -> None:
    a, b = pair
    assert b.keys is not None
    old_token = mint(b)
    old_kid = b.keys.active_kid
    assert b.worker_for_session(old_token, "s1").kid == old_kid  # (and now cached as verified)
    with pytest.raises(Conflict, match="active key"):
        await a.retire_key(old_kid)
    await a.rotate_keys()
    with pytest.raises(NotFound):
        await a.retire_key("k-nobody")
    await a.retire_key(old_kid)
    retired: list[frozenset[str]] = []
    b.on_retired = retired.append
    await b.refresh_keys()
    assert retired == [frozenset({old_kid})]
    with pytest.raises(AuthenticationFailed, match="unknown key"):
        b.worker_for_session(old_token, "s1")  # the verified-token cache went with the old ring
