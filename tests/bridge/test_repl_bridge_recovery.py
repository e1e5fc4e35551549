"""The REPL bridge core recovering without losing or repeating anything: a v1 work item that is
gone (lease lost), a deregistered environment, a perpetual session re-attached after a restart of
the front end, and v2 worker tokens refreshed by rebuilding the transport (docs/protocol.md §12.2–§12.3)."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator

import pytest
from tests.bridge.repl_rig import Rig, fast_config, prompt, reply, rig
from tests.support.api import mint_token
from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth

from tether.bridge.pointer import read_pointer
from tether.bridge.repl.env_based import EnvBasedBridge
from tether.bridge.repl.env_less import EnvLessBridge
from tether.protocol.bridge_policy import jwt_expiry

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    with ServerProcess(tmp_path_factory.mktemp("repl-v1"), lease_ttl_s=6, lease_check_interval_s=1,
                       limits={"rate_per_second": 0}) as proc:
        yield proc, mint_token(proc.data_dir)


def conversation_uuids(sub: Receiver) -> list[str]:
    return [f["uuid"] for f in sub.frames if f.get("type") in ("user", "assistant")]


async def turn(r: Rig, sub: Receiver, text: str) -> None:
    """A prompt from a client and the front end's answer: both reach the subscriber."""
    sent = await r.post_prompt(text)
    await eventually(lambda: any(p["uuid"] == sent["uuid"] for p in r.front.prompts), 30, message=f"prompt {text!r}")
    answer = reply(f"answer to {text}")
    r.say(answer)
    await eventually(lambda: answer["uuid"] in conversation_uuids(sub), 30, message=f"answer to {text!r}")


async def test_a_lost_work_item_is_replaced_without_loss(v1: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = v1
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        core = r.rc.core
        assert isinstance(core, EnvBasedBridge) and core._work is not None
        sub = await r.subscribe(from_seq=0)
        await turn(r, sub, "before")
        old_work = core._work.id
        resp = await r.http.post(f"/v1/environments/{core.environment_id}/work/{old_work}/stop", json={"force": True},
                                 headers=auth(token))
        assert resp.status_code in (200, 204), resp.text
        r.say(prompt("typed while the work item is gone"))
        await eventually(lambda: core._work is not None and core._work.id != old_work and r.front.status is not None
                         and r.front.status.state == "connected", 40, message="a fresh work item")
        await turn(r, sub, "after")
        uuids = conversation_uuids(sub)
        assert len(uuids) == len(set(uuids)) == 5
        await sub.close()


async def test_a_deregistered_environment_is_registered_again(v1: tuple[ServerProcess, str],
                                                              tmp_path: pathlib.Path) -> None:
    server, token = v1
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        core = r.rc.core
        assert isinstance(core, EnvBasedBridge)
        session, env = r.session_id, core.environment_id
        sub = await r.subscribe(from_seq=0)
        await turn(r, sub, "one")
        resp = await r.http.delete(f"/v1/environments/bridge/{env}", headers=auth(token))
        assert resp.status_code in (200, 204), resp.text
        await eventually(lambda: r.front.states[-1] == "reconnecting" or core._work is None, 30)
        await eventually(lambda: r.front.status is not None and r.front.status.state == "connected"
                         and core._work is not None, 60, message="the bridge to come back")
        assert r.session_id == session and core.environment_id == env  # strategy 1: same environment and session
        await turn(r, sub, "two")
        uuids = conversation_uuids(sub)
        assert len(uuids) == len(set(uuids)) == 4
        await sub.close()


async def test_a_session_archived_elsewhere_is_replaced_with_the_whole_history(v1: tuple[ServerProcess, str],
                                                                              tmp_path: pathlib.Path) -> None:
    """Strategy 2 of doReconnect: the session cannot be re-queued, so a new one is created and the
    conversation is flushed into it again, once."""
    server, token = v1
    async with rig(server, token, tmp_path / "home") as r:
        r.front.conversation.extend([prompt("kept one"), reply("kept two")])
        await r.start()
        await r.connected()
        first = r.session_id
        resp = await r.http.post(f"/v1/sessions/{first}/archive", json={}, headers=auth(token))
        assert resp.status_code == 200, resp.text
        await eventually(lambda: r.front.info is not None and r.front.info.session_id not in (None, first)
                         and r.front.status is not None and r.front.status.state == "connected", 60,
                         message="a new session")
        sub = await r.subscribe(from_seq=0)
        await eventually(lambda: len(conversation_uuids(sub)) == 2, 20, message="the history in the new session")
        await turn(r, sub, "in the new session")
        assert len(set(conversation_uuids(sub))) == len(conversation_uuids(sub)) == 4
        await sub.close()


async def test_perpetual_session_is_re_attached_after_a_restart(v1: tuple[ServerProcess, str],
                                                                tmp_path: pathlib.Path) -> None:
    server, token = v1
    home = tmp_path / "home"
    async with rig(server, token, home, perpetual=True) as r:
        r.front.conversation.extend([prompt("kept"), reply("across restarts")])
        await r.start()
        await r.connected()
        first = r.session_id
        sub = await r.subscribe(from_seq=0)
        await eventually(lambda: len(conversation_uuids(sub)) == 2, 20)
        await sub.close()
        await r.rc.stop()
        pointer = read_pointer(home, home)
        assert pointer is not None and pointer.pointer.session_id == first and pointer.pointer.source == "repl"
        assert (await r.session())["session_status"] != "archived"
        conversation = list(r.front.conversation)
    async with rig(server, token, home, perpetual=True) as r:
        r.front.conversation.extend(conversation)
        await r.start()
        await r.connected()
        assert r.session_id == first
        r.say(prompt("after the restart"))
        sub = await r.subscribe(from_seq=0)
        await eventually(lambda: len(conversation_uuids(sub)) == 3, 20)
        assert len(set(conversation_uuids(sub))) == 3  # the history was not sent again
        await sub.close()


async def test_v2_an_expired_worker_token_is_recovered_after_a_server_restart(tmp_path: pathlib.Path) -> None:
    """The token expires while the server is away (no proactive refresh here): on its return the
    stream or the CCR client is refused (401 / 4003) and the core rebuilds on a fresh token."""
    with ServerProcess(tmp_path / "srv", worker_transport="v2", worker_token_ttl_s=3,
                       limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        async with rig(server, token, tmp_path / "home", config=fast_config(token_refresh_floor_s=3600.0)) as r:
            await r.start()
            await r.connected()
            core = r.rc.core
            assert isinstance(core, EnvLessBridge) and core._jwt is not None
            expires = jwt_expiry(core._jwt)
            assert expires is not None
            sub = await r.subscribe(from_seq=0)
            await turn(r, sub, "before")
            await sub.close()
            await asyncio.to_thread(server.stop)
            await eventually(lambda: time.time() > expires + 1, 10, message="the worker token to expire")
            await asyncio.to_thread(server.start)
            await eventually(lambda: core.rebuilds >= 1 and r.front.status is not None
                             and r.front.status.state == "connected", 60, message="the rebuilt transport")
            sub = await r.subscribe(from_seq=0)
            await turn(r, sub, "after")
            uuids = conversation_uuids(sub)
            assert len(uuids) == len(set(uuids)) == 4
            await sub.close()


async def test_v2_worker_tokens_are_refreshed_by_rebuilding_the_transport(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "srv", worker_transport="v2", worker_token_ttl_s=8,
                       limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        async with rig(server, token, tmp_path / "home", config=fast_config(token_refresh_floor_s=1.0)) as r:
            await r.start()
            await r.connected()
            core = r.rc.core
            assert isinstance(core, EnvLessBridge)
            sub = await r.subscribe(from_seq=0)
            first_epoch = core.epoch
            await turn(r, sub, "first")
            await eventually(lambda: core.rebuilds >= 2, 30, message="two token refreshes")
            await turn(r, sub, "second")
            r.say(prompt("typed during refreshes"), reply("answered"))
            await eventually(lambda: core.rebuilds >= 3, 30)
            await turn(r, sub, "third")
            assert core.epoch is not None and first_epoch is not None and core.epoch > first_epoch
            uuids = conversation_uuids(sub)
            assert len(uuids) == len(set(uuids)) == 8
            session = await r.session()
            assert session["worker"]["epoch"] == core.epoch
            await sub.close()
