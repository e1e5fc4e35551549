"""V2Transport (SSE + CCRClient) against a real `tether server`: epoch takeover, delivery states,
the factory's v2 path; and its close codes against a scripted server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from tests.support.fake_http import FakeHTTP, Reply, Request
from tests.support.server import ServerProcess
from tests.support.worker import Receiver, auth, subscribe, user_message

from tether.client.ccr import CCRConfig
from tether.client.factory import code_session_url, make_transport
from tether.client.sse import SSEConfig
from tether.client.transport import Message, TransportClosed, TransportError, TransportState
from tether.client.v2 import V2Config, V2Transport
from tether.protocol.backoff import Backoff
from tether.protocol.work_secret import WorkSecret

pytestmark = pytest.mark.anyio

FAST = V2Config(
    sse=SSEConfig(liveness_timeout=5.0, reconnect_backoff=lambda: Backoff(0.02, 0.2, 0.25, 600.0, 60.0)),
    ccr=CCRConfig(heartbeat_interval=3600.0, retry_backoff=lambda: Backoff(0.01, 0.1), init_state_wait=2.0),
    close_grace=2.0,
)


class Worker:
    """A V2Transport run in the background, with a scripted stand-in for the agent."""

    def __init__(self, transport: V2Transport) -> None:
        self.t = transport
        self.inbox: list[Message] = []
        self.changed = asyncio.Event()
        self.run_task = asyncio.create_task(transport.run())
        self.read_task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.t.incoming():
            self.inbox.append(msg)
            self.changed.set()
        self.changed.set()

    async def next_prompts(self, count: int, timeout: float = 10.0) -> list[Message]:
        async with asyncio.timeout(timeout):
            while len(self.inbox) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.inbox[:count]

    def answer(self, prompt: Message, *, finish: bool = True) -> list[str]:
        """What an agent writes for a prompt: the replay echo, an answer, a result."""
        self.t.write({**prompt, "isReplay": True})
        reply = {"type": "assistant", "message": {"role": "assistant", "content": [
            {"type": "text", "text": f"re: {prompt['message']['content']}"}]}}
        self.t.write(reply)
        if finish:
            self.t.write({"type": "result", "subtype": "success", "result": "done"})
        return [reply["message"]["content"][0]["text"]]

    async def closed(self, timeout: float = 10.0) -> TransportClosed:
        return await asyncio.wait_for(asyncio.shield(self.run_task), timeout)

    async def stop(self) -> None:
        await self.t.close()
        with contextlib.suppress(Exception):
            await self.run_task
        self.read_task.cancel()


async def code_session(client: httpx.AsyncClient, owner: str) -> str:
    r = await client.post("/v1/code/sessions", json={"title": "v2 transport", "bridge": {}}, headers=auth(owner))
    assert r.status_code == 200, r.text
    return str(r.json()["session"]["id"])


async def bridge(client: httpx.AsyncClient, owner: str, sid: str) -> dict[str, Any]:
    r = await client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=auth(owner))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def post_prompt(client: httpx.AsyncClient, owner: str, sid: str, text: str) -> Message:
    msg = user_message(text)
    r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(owner))
    assert r.status_code == 200, r.text
    return msg


async def stored(client: httpx.AsyncClient, owner: str, sid: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}, headers=auth(owner))
    r.raise_for_status()
    return list(r.json()["data"])


def payload_of(ev: dict[str, Any]) -> dict[str, Any]:
    return dict(ev.get("payload", ev))


@contextlib.asynccontextmanager
async def session(server: ServerProcess, owner: str) -> AsyncIterator[tuple[httpx.AsyncClient, str, Receiver]]:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        sid = await code_session(client, owner)
        sub = await subscribe(server.ws_url, sid, owner)
        try:
            yield client, sid, sub
        finally:
            await sub.close()


async def test_epoch_takeover_stops_the_old_worker_and_loses_or_doubles_nothing(
        server: ServerProcess, owner_token: str) -> None:
    async with session(server, owner_token) as (client, sid, sub):
        first = await bridge(client, owner_token, sid)
        a = Worker(V2Transport(f"{server.url}/v1/code/sessions/{sid}", first["worker_jwt"],
                               epoch=first["worker_epoch"], config=FAST))
        assert await a.t.wait_connected(10)
        prompts = [await post_prompt(client, owner_token, sid, f"p{i}") for i in range(3)]
        got = await a.next_prompts(3)
        assert [m["uuid"] for m in got] == [p["uuid"] for p in prompts]
        texts = a.answer(got[0]) + a.answer(got[1])  # p0 and p1 are processed; p2 only received
        assert await a.t.flush(10)

        second = await bridge(client, owner_token, sid)  # a newer worker takes over
        assert second["worker_epoch"] == first["worker_epoch"] + 1
        a.t.write({"type": "assistant", "message": {"role": "assistant", "content": "too late"}})
        closed = await a.closed()
        assert (closed.reason, closed.code) == ("permanent", 4090)
        assert a.t.state is TransportState.CLOSED
        with pytest.raises(TransportError):
            a.t.write({"type": "assistant", "message": {}})

        late = await post_prompt(client, owner_token, sid, "p3")
        b = Worker(V2Transport(f"{server.url}/v1/code/sessions/{sid}", second["worker_jwt"],
                               epoch=second["worker_epoch"], config=FAST))
        try:
            got_b = await b.next_prompts(2)
            # the new worker gets what the old one never finished, and what came after: nothing else
            assert [m["uuid"] for m in got_b] == [prompts[2]["uuid"], late["uuid"]]
            texts += b.answer(got_b[0]) + b.answer(got_b[1])
            assert await b.t.flush(10)
            await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == late["uuid"]
                               and f["status"] == "processed")
            log = [payload_of(e) for e in await stored(client, owner_token, sid)]
            uuids = [p.get("uuid") for p in log]
            assert len(uuids) == len(set(uuids))  # nothing stored twice
            answers = [p["message"]["content"][0]["text"] for p in log if p.get("type") == "assistant"
                       and isinstance(p["message"]["content"], list)]
            assert answers == texts  # every answer once, in order; the superseded write is not there
            assert not any(p.get("message", {}).get("content") == "too late" for p in log)
            assert [p["uuid"] for p in log if p.get("type") == "user"] == [m["uuid"] for m in [*prompts, late]]
            assert sum(1 for p in log if p.get("type") == "result") == 4
            # every prompt was processed exactly once, by one worker
            processed = [f["uuid"] for f in sub.frames if f.get("type") == "delivery_update"
                         and f["status"] == "processed"]
            assert sorted(processed) == sorted(m["uuid"] for m in [*prompts, late])
        finally:
            await b.stop()
            await a.stop()


async def test_delivery_states_reach_subscribers_in_order(server: ServerProcess, owner_token: str) -> None:
    async with session(server, owner_token) as (client, sid, sub):
        b = await bridge(client, owner_token, sid)
        w = Worker(V2Transport(f"{server.url}/v1/code/sessions/{sid}", b["worker_jwt"], epoch=b["worker_epoch"],
                               config=FAST))
        try:
            prompts = [await post_prompt(client, owner_token, sid, f"q{i}") for i in range(3)]
            got = await w.next_prompts(3)
            for prompt in got:
                w.answer(prompt)
            assert await w.t.flush(10)
            for p in prompts:
                await sub.wait_for(lambda f, u=p["uuid"]: f.get("type") == "delivery_update" and f["uuid"] == u
                                   and f["status"] == "processed")
            for p in prompts:
                states = [f["status"] for f in sub.frames
                          if f.get("type") == "delivery_update" and f["uuid"] == p["uuid"]]
                assert states == ["received", "processing", "processed"]
            statuses = [f["status"] for f in sub.frames if f.get("type") == "session_update"]
            assert statuses[-1] == "idle" and "running" in statuses
            r = await client.get(f"/v1/sessions/{sid}", headers=auth(owner_token))
            assert r.json()["worker"]["connected"] is True
        finally:
            await w.stop()
        r = await client.get(f"/v1/sessions/{sid}", headers=auth(owner_token))
        assert r.json()["worker"]["connected"] is False  # a closed worker reports itself disconnected


async def test_the_factory_registers_a_v2_worker_from_the_work_secret(server: ServerProcess,
                                                                      owner_token: str) -> None:
    async with session(server, owner_token) as (client, sid, sub):
        token = (await bridge(client, owner_token, sid))["worker_jwt"]  # epoch 1
        secret = WorkSecret(session_ingress_token=token, api_base_url=server.url, use_code_sessions=True)
        transport = await make_transport(secret, base_url=server.url, session_id=sid.replace("cse_", "session_"),
                                         v2_config=FAST)
        assert isinstance(transport, V2Transport)
        assert transport.epoch == 2 and transport.session_url == code_session_url(server.url, sid)
        w = Worker(transport)
        try:
            prompt = await post_prompt(client, owner_token, sid, "via the factory")
            got = await w.next_prompts(1)
            w.answer(got[0])
            await sub.wait_for(lambda f: f.get("type") == "result")
            assert got[0]["uuid"] == prompt["uuid"]
        finally:
            await w.stop()


async def test_close_codes_for_init_failure_sse_give_up_and_refusal() -> None:
    mode = {"put": 200, "stream": 200}

    async def handler(req: Request) -> Reply:
        if req.method == "PUT":
            return Reply(mode["put"], {})
        if req.path.endswith("/worker/events/stream"):
            return Reply(mode["stream"], {})
        if req.path.endswith("/worker"):
            return Reply(200, {"worker": {}})
        return Reply(200, {})

    cfg = V2Config(sse=SSEConfig(reconnect_backoff=lambda: Backoff(0.01, 0.05, 0.25, give_up_after=0.3)),
                   ccr=FAST.ccr, close_grace=0.5)
    async with FakeHTTP(handler) as fake:
        url = f"{fake.url}/v1/code/sessions/cse_x"
        mode.update(put=400)
        assert (await V2Transport(url, "t", epoch=1, config=cfg).run()).code == 4091
        mode.update(put=200, stream=503)
        closed = await V2Transport(url, "t", epoch=1, config=cfg).run()
        assert (closed.reason, closed.code) == ("gave_up", 4092)
        mode.update(stream=404)
        closed = await V2Transport(url, "t", epoch=1, config=cfg).run()
        assert (closed.reason, closed.code) == ("permanent", 404)
        # no epoch: the worker registers first; a refused registration is an init failure too
        closed = await V2Transport(url, "t", config=cfg).run()
        assert closed.code == 4091 and "worker_epoch" in closed.detail

