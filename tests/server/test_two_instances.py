"""Two real `tether server` processes on one PostgreSQL database and one Redis (no balancer: each
client picks its instance). What one instance commits, a subscriber on the other sees, once and
in order; the database decides the races between them (a poll each for one work item, an answer
each to one permission request). The races are forced deterministically in
tests/server/service/test_postgres_races.py; here they run through HTTP and sockets end to end.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.worker import auth, create_session, poll, register, subscribe, take_work, worker_post

pytestmark = pytest.mark.anyio


@pytest.fixture
def instances(tmp_path: pathlib.Path, postgres_url: str, shared_redis_url: str) -> Iterator[list[ServerProcess]]:
    common: dict[str, Any] = {"database_url": postgres_url, "redis_url": shared_redis_url,
                              "redis_prefix": f"t-{uuid.uuid4().hex[:12]}", "limits": {"rate_per_second": 0},
                              "poll_timeout_s": 2.0}
    started: list[ServerProcess] = []
    try:
        for name in ("a", "b"):  # one after the other: the first migrates and makes the signing keys
            started.append(ServerProcess(tmp_path / name, **common).start())
        yield started
    finally:
        for proc in started:
            proc.stop()


def assistant(text: str) -> dict[str, Any]:
    return {"type": "assistant", "uuid": str(uuid.uuid4()), "session_id": "", "parent_tool_use_id": None,
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


async def test_what_one_instance_commits_a_subscriber_on_the_other_sees_once_in_order(
        instances: list[ServerProcess]) -> None:
    a, b = instances
    token = a.token()
    async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=15) as on_b:
        env = await register(on_a, token)
        sid = await create_session(on_a, token, env["environment_id"])
        _item, worker = await take_work(on_b, env)  # polled and acked through the other instance
        sub = await subscribe(b.ws_url, sid, token)
        try:
            sent = [assistant(f"a{i}") for i in range(10)]
            for event in sent:  # the worker writes through A only
                await worker_post(on_a, sid, worker, event)
            both = [assistant(f"x{i}") for i in range(20)]  # then through both at once
            await asyncio.gather(*(worker_post(on_a if i % 2 else on_b, sid, worker, event)
                                   for i, event in enumerate(both)))
            wanted = {e["uuid"] for e in sent + both}
            await sub.wait_for(lambda _f: wanted <= {f.get("uuid") for f in sub.frames}, timeout=20)
            seen = [f["uuid"] for f in sub.frames if f.get("uuid") in wanted]
            assert len(seen) == len(wanted)  # each once
            assert seen[:10] == [e["uuid"] for e in sent]  # in the order A committed them
        finally:
            await sub.close()
        page = (await on_b.get(f"/v1/sessions/{sid}/events", params={"limit": 100}, headers=auth(token))).json()
        seqs = [e["sequence_num"] for e in page["data"]]
        assert sorted(seqs) == list(range(1, len(seqs) + 1))  # one log, no number twice, no gap


async def test_a_poll_on_each_instance_leases_one_work_item_once(instances: list[ServerProcess]) -> None:
    a, b = instances
    token = a.token()
    async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=15) as on_b:
        env = await register(on_a, token)
        await create_session(on_b, token, env["environment_id"])
        results = await asyncio.gather(poll(on_a, env), poll(on_b, env))
        leased = [r for r in results if r is not None]
        assert len(leased) == 1, results  # the other poll waited its 2 s and came back empty


async def test_answers_to_one_permission_on_two_instances_one_wins(instances: list[ServerProcess]) -> None:
    a, b = instances
    token = a.token()
    async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=15) as on_b:
        env = await register(on_a, token)
        sid = await create_session(on_a, token, env["environment_id"])
        _item, worker = await take_work(on_a, env)
        subs = [await subscribe(a.ws_url, sid, token), await subscribe(b.ws_url, sid, token)]
        try:
            ask = {"type": "control_request", "request_id": "req-1",
                   "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}}}
            await worker_post(on_a, sid, worker, ask)
            for sub in subs:
                await sub.wait_for(lambda f: f.get("type") == "control_request")
            answers = [{"type": "control_response", "response": {
                "subtype": "success", "request_id": "req-1", "response": decision}}
                for decision in ({"behavior": "allow", "updatedInput": {}}, {"behavior": "deny", "message": "no"})]
            await asyncio.gather(*(sub.ws.send(json.dumps(answer)) for sub, answer in zip(subs, answers, strict=True)))

            async def settled() -> list[dict[str, Any]] | None:
                perms = (await on_b.get(f"/v1/sessions/{sid}/permissions", headers=auth(token))).json()["data"]
                return perms if perms and perms[0]["status"] != "pending" else None

            perms = await eventually_async(settled)
            loser = subs[1] if perms[0]["status"] == "allowed" else subs[0]
            error = await loser.wait_for(lambda f: f.get("type") == "error")
            assert error["error"]["type"] == "already_resolved"
            winner = subs[0] if loser is subs[1] else subs[1]
            assert not [f for f in winner.frames if f.get("type") == "error"]
        finally:
            for sub in subs:
                await sub.close()
        page = (await on_a.get(f"/v1/sessions/{sid}/events", params={"limit": 100}, headers=auth(token))).json()
        assert len([e for e in page["data"] if e.get("type") == "control_response"]) == 1


async def eventually_async(probe: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """The first truthy result of the async ``probe`` (polled, like tests/support/waiting.py)."""
    async with asyncio.timeout(timeout):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(interval)


async def test_work_stopped_on_one_instance_ends_the_worker_token_on_the_other(
        instances: list[ServerProcess]) -> None:
    a, b = instances
    token = a.token()
    async with httpx.AsyncClient(base_url=a.url, timeout=15) as on_a, \
            httpx.AsyncClient(base_url=b.url, timeout=15) as on_b:
        env = await register(on_a, token)
        sid = await create_session(on_a, token, env["environment_id"])
        item, worker = await take_work(on_a, env)
        await worker_post(on_b, sid, worker, assistant("before"))  # B has seen this work item live
        stop = await on_a.post(f"/v1/environments/{env['environment_id']}/work/{item['id']}/stop",
                               json={"force": True}, headers=auth(token))
        assert stop.status_code == 200, stop.text
        late = await on_b.post(f"/v1/session_ingress/session/{sid}/events", json={"events": [assistant("after")]},
                               headers=auth(worker))
        assert late.status_code == 410 and late.json()["error"]["type"] == "work_gone", late.text
