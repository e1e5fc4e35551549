"""Signing-key rotation reaches running instances (docs/protocol.md §9.2): two real `tether server`
processes on one PostgreSQL database, the keys changed by `tether admin` from outside both. With
Redis the bus tells them at once (their periodic refresh is set to an hour here, so it cannot be
what did it); without Redis each re-reads the key table every ``key_refresh_s``.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any, TypeVar

import httpx
import jwt
import pytest
from tests.support.server import ServerProcess
from tests.support.waiting import eventually_awaited
from tests.support.worker import auth, connect_worker, create_session, register, take_work, user_message

pytestmark = pytest.mark.anyio
T = TypeVar("T")


def start_pair(tmp_path: pathlib.Path, **common: Any) -> list[ServerProcess]:
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):  # one after the other: the first migrates and makes the signing key
            started.append(ServerProcess(tmp_path / name, **common).start())
    except BaseException:
        for proc in started:
            proc.stop()
        raise
    return started


@pytest.fixture
def on_redis(tmp_path: pathlib.Path, postgres_url: str, shared_redis_url: str) -> Iterator[tuple[list[ServerProcess], dict[str, str]]]:
    prefix = f"t-{uuid.uuid4().hex[:12]}"
    pair = start_pair(tmp_path, database_url=postgres_url, redis_url=shared_redis_url, redis_prefix=prefix,
                      key_refresh_s=3600.0, limits={"rate_per_second": 0})
    try:
        yield pair, {"--database-url": postgres_url, "--redis-url": shared_redis_url, "TETHER_REDIS_PREFIX": prefix}
    finally:
        for proc in pair:
            proc.stop()


@pytest.fixture
def without_redis(tmp_path: pathlib.Path, postgres_url: str) -> Iterator[tuple[list[ServerProcess], dict[str, str]]]:
    pair = start_pair(tmp_path, database_url=postgres_url, key_refresh_s=0.5, limits={"rate_per_second": 0})
    try:
        yield pair, {"--database-url": postgres_url}
    finally:
        for proc in pair:
            proc.stop()


async def admin(tmp_path: pathlib.Path, where: dict[str, str], *args: str) -> str:
    """`tether admin …` as its own process (the operator's shell): its stdout."""
    wanted = ("--database-url", "--redis-url") if args[0] != "keys" else ("--database-url",)
    options = [part for name, value in where.items() if name in wanted for part in (name, value)]
    env = {**os.environ, **{k: v for k, v in where.items() if not k.startswith("--")}}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tether.cli.main", "admin", *args, "--data-dir",
                         str(tmp_path / "admin"), *options], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()



async def worker_token(client: httpx.AsyncClient, owner: str, env: dict[str, Any]) -> tuple[str, str]:
    """A session created through ``client``'s instance (which signs its worker token): (id, token)."""
    sid = await create_session(client, owner, env["environment_id"])
    _item, token = await take_work(client, env)
    return sid, token


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token.removeprefix("sk-ant-si-"))["kid"])


async def writes(client: httpx.AsyncClient, sid: str, token: str) -> int:
    r = await client.post(f"/v1/session_ingress/session/{sid}/events", json={"events": [user_message("hi")]},
                          headers=auth(token))
    return r.status_code


async def rotate_then_retire(pair: list[ServerProcess], where: dict[str, str], tmp_path: pathlib.Path) -> None:
    a, b = pair
    owner = a.token()
    async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=15) as on_b:
        env = await register(on_a, owner, max_sessions=100)
        old_sid, old_token = await worker_token(on_a, owner, env)
        old_kid = kid_of(old_token)
        listed = await admin(tmp_path, where, "keys", "--json")
        assert old_kid in listed

        new_kid = await admin(tmp_path, where, "rotate-keys")
        assert new_kid != old_kid

        async def signs_with_new_key(client: httpx.AsyncClient) -> tuple[str, str] | None:
            sid, token = await worker_token(client, owner, env)
            return (sid, token) if kid_of(token) == new_kid else None

        signed = {"a": await eventually_awaited(lambda: signs_with_new_key(on_a)),
                  "b": await eventually_awaited(lambda: signs_with_new_key(on_b))}
        for sid, token in signed.values():  # each instance verifies what the other signed with the new key
            assert await writes(on_a, sid, token) == 200 and await writes(on_b, sid, token) == 200
        assert await writes(on_b, old_sid, old_token) == 200  # the old key still verifies

        socket = await connect_worker(b.ws_url, old_sid, old_token)  # held open with an old-key token
        try:
            await admin(tmp_path, where, "retire-key", old_kid)

            async def refused_everywhere() -> bool:
                return await writes(on_a, old_sid, old_token) == 401 and await writes(on_b, old_sid, old_token) == 401

            await eventually_awaited(refused_everywhere)
            code, _reason = await asyncio.wait_for(socket.closed, 15)
            assert code == 4003  # what the retired key's token opened closed, as a revoked one's does
        finally:
            await socket.close()
        for sid, token in signed.values():  # tokens of the new key go on working
            assert await writes(on_a, sid, token) == 200 and await writes(on_b, sid, token) == 200
        listed = await admin(tmp_path, where, "keys", "--json")
        assert old_kid not in listed and new_kid in listed


async def test_a_rotation_and_a_retirement_reach_running_instances_through_redis(
        on_redis: tuple[list[ServerProcess], dict[str, str]], tmp_path: pathlib.Path) -> None:
    pair, where = on_redis
    await rotate_then_retire(pair, where, tmp_path)


async def test_without_redis_each_instance_re_reads_the_keys_on_its_own(
        without_redis: tuple[list[ServerProcess], dict[str, str]], tmp_path: pathlib.Path) -> None:
    pair, where = without_redis
    await rotate_then_retire(pair, where, tmp_path)
