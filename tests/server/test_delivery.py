"""Delivery guarantees: long-poll wake-up, resume without loss or duplicates, re-send of
unconfirmed inbound events, leases, and durability across SIGKILL."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import httpx
import pytest
import websockets
from tests.support.server import ServerProcess, wait_until
from tests.support.worker import (
    Receiver,
    auth,
    connect_worker,
    create_session,
    poll,
    register,
    subscribe,
    take_work,
    user_message,
    worker_post,
)

from tether.protocol.messages import RECEIPT_FIELD, RECEIPTS_HEADER

pytestmark = pytest.mark.anyio


def assistant(text: str) -> dict[str, object]:
    return {"type": "assistant", "uuid": str(uuid.uuid4()),
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


async def test_long_poll_wakes_when_work_is_queued(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)  # registering queues no work

        def polls_so_far() -> int:  # the server counts a poll when it parks on the queue
            metrics = httpx.get(f"{server.url}/metrics").text
            found = re.search(r"^tether_polls_total (\d+)", metrics, re.MULTILINE)
            return int(found.group(1)) if found else 0

        before = await asyncio.to_thread(polls_so_far)
        started = asyncio.get_running_loop().time()
        poller = asyncio.create_task(poll(client, env))
        await asyncio.to_thread(wait_until, lambda: polls_so_far() > before, 10, 0.01, "the poll to park")
        assert not poller.done()
        queued_at = asyncio.get_running_loop().time()
        sid = await create_session(client, owner_token, env["environment_id"])
        item = await asyncio.wait_for(poller, 10)
        woke = asyncio.get_running_loop().time()
        assert item is not None and item["data"]["id"] == sid
        assert woke - started < 8, "the poll must return at once, not at its timeout"
        assert woke - queued_at < 1.0


async def test_poll_without_work_returns_null(tmp_path: object) -> None:
    import pathlib

    with ServerProcess(pathlib.Path(str(tmp_path)), poll_timeout_s=0.5) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            r = await client.get(f"/v1/environments/{env['environment_id']}/work/poll",
                                 headers=auth(env["environment_secret"]))
            assert r.status_code == 200 and r.json() is None


async def test_subscriber_resume_sees_missed_events_once(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        _, wtoken = await take_work(client, env)
        sub = await subscribe(server.ws_url, sid, owner_token, from_seq=0)
        first = [assistant(f"a{i}") for i in range(5)]
        await worker_post(client, sid, wtoken, *first)
        last = await sub.wait_for(lambda f: f.get("uuid") == first[-1]["uuid"])
        await sub.close()
        missed = [assistant(f"b{i}") for i in range(7)]
        await worker_post(client, sid, wtoken, *missed)
        # replays of already-logged events are acknowledged and not appended again
        await worker_post(client, sid, wtoken, *first[2:], *missed[:3])
        resumed = await subscribe(server.ws_url, sid, owner_token, from_seq=last["sequence_num"])
        await resumed.wait_for(lambda f: f.get("uuid") == missed[-1]["uuid"])
        more = assistant("live")
        await worker_post(client, sid, wtoken, more)
        await resumed.wait_for(lambda f: f.get("uuid") == more["uuid"])
        got = [f["uuid"] for f in resumed.frames if f.get("type") == "assistant"]
        assert got == [m["uuid"] for m in missed] + [more["uuid"]]
        seqs = [f["sequence_num"] for f in resumed.frames if f.get("type") == "assistant"]
        assert seqs == list(range(last["sequence_num"] + 1, last["sequence_num"] + 9))
        await resumed.close()


async def test_worker_reconnect_gets_unconfirmed_inbound_again(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        _, wtoken = await take_work(client, env)
        # a prompt sent before any worker socket exists is durable
        early = user_message("sent while nobody listened")
        r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [early]}, headers=auth(owner_token))
        assert r.status_code == 200
        worker = await connect_worker(server.ws_url, sid, wtoken)
        await worker.wait_for(lambda f: f.get("uuid") == early["uuid"])
        await worker.close()  # dropped before echoing: not confirmed
        worker = await connect_worker(server.ws_url, sid, wtoken)
        frames = worker.frames
        await worker.wait_for(lambda f: f.get("uuid") == early["uuid"])
        assert frames[0]["type"] == "control_request" and frames[0]["request"]["subtype"] == "initialize"
        # the echo says the agent started it; until its turn's result is stored it is sent again
        # (an agent killed mid-turn leaves it to the next one, docs/protocol.md §4.4)
        await worker_post(client, sid, wtoken, {**early, "isReplay": True}, assistant("working on it"))
        await worker.close()
        worker = await connect_worker(server.ws_url, sid, wtoken)
        await worker.wait_for(lambda f: f.get("uuid") == early["uuid"])
        await worker_post(client, sid, wtoken, {"type": "result", "subtype": "success", "uuid": str(uuid.uuid4())})
        await worker.close()
        worker = await connect_worker(server.ws_url, sid, wtoken)
        await worker.wait_for(lambda f: f.get("type") == "control_request")
        probe = user_message("after confirm")
        await client.post(f"/v1/sessions/{sid}/events", json={"events": [probe]}, headers=auth(owner_token))
        await worker.wait_for(lambda f: f.get("uuid") == probe["uuid"])
        assert early["uuid"] not in [f.get("uuid") for f in worker.frames], "answered prompts are not re-sent"
        await worker.close()


async def test_v1_prompt_moves_processing_at_its_echo_and_processed_at_its_result(
        server: ServerProcess, owner_token: str) -> None:
    """What subscribers are told: delivered, started (the echo), done (a result stored after it);
    a result the worker re-sends after a reconnect does not end the turn started since."""
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        _, wtoken = await take_work(client, env)
        sub = await subscribe(server.ws_url, sid, owner_token)
        worker = await connect_worker(server.ws_url, sid, wtoken)
        first, second = user_message("first"), user_message("second")
        for prompt in (first, second):
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [prompt]}, headers=auth(owner_token))
            assert r.status_code == 200
            await worker.wait_for(lambda f, p=prompt: f.get("uuid") == p["uuid"])
        ended = {"type": "result", "subtype": "success", "uuid": str(uuid.uuid4())}
        # one batch: the first turn starts and ends, the second starts
        await worker_post(client, sid, wtoken, {**first, "isReplay": True}, assistant("one"), ended,
                          {**second, "isReplay": True})
        await worker_post(client, sid, wtoken, ended)  # re-sent after a lost answer: already in the log
        await worker_post(client, sid, wtoken, assistant("two"))  # a flush point for the frames
        await sub.wait_for(lambda f: f.get("type") == "assistant" and f["message"]["content"][0]["text"] == "two")

        def states(prompt: dict[str, object]) -> list[str]:
            return [f["status"] for f in sub.frames if f.get("type") == "delivery_update" and f["uuid"] == prompt["uuid"]]

        assert states(first) == ["received", "processing", "processed"]
        assert states(second) == ["received", "processing"], "its turn has not ended"
        r = await client.get(f"/web/sessions/{sid}/undelivered", headers=auth(owner_token))
        assert [(row["uuid"], row["status"]) for row in r.json()["data"]] == [(second["uuid"], "processing")]
        await worker_post(client, sid, wtoken, {"type": "result", "subtype": "success", "uuid": str(uuid.uuid4())})
        await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == second["uuid"]
                           and f["status"] == "processed")
        await worker.close()
        await sub.close()


async def test_a_worker_with_receipts_confirms_control_messages_only_by_receipt(
        server: ServerProcess, owner_token: str) -> None:
    """A permission answer sent on a socket that died unread is sent again, even though the worker
    posted output meanwhile (it may predate the read); a receipt frame confirms it."""
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        _, wtoken = await take_work(client, env)

        async def connect() -> Receiver:
            ws = await websockets.connect(f"{server.ws_url}/v1/session_ingress/ws/{sid}",
                                          additional_headers={**auth(wtoken), RECEIPTS_HEADER: "1"})
            receiver = Receiver(ws, newline=True)
            await receiver.wait_for(lambda f: f.get("type") == "control_request")  # initialize
            return receiver

        def is_answer(f: dict[str, object]) -> bool:
            return f.get("type") == "control_response"

        worker = await connect()
        await worker_post(client, sid, wtoken, {"type": "control_request", "request_id": "perm-1", "uuid": str(uuid.uuid4()),
                                                "request": {"subtype": "can_use_tool", "tool_name": "Write",
                                                            "input": {}, "tool_use_id": "toolu_1"}})
        sub = await subscribe(server.ws_url, sid, owner_token)
        await sub.wait_for(lambda f: f.get("request_id") == "perm-1")
        await sub.ws.send(json.dumps({"type": "control_response", "response": {
            "subtype": "success", "request_id": "perm-1", "response": {"behavior": "allow", "updatedInput": {}}}}))
        sent = await worker.wait_for(is_answer)
        await worker_post(client, sid, wtoken, assistant("output that may predate the read"))
        await worker.close()  # the socket dies without a receipt
        worker = await connect()
        again = await worker.wait_for(is_answer)
        assert again["uuid"] == sent["uuid"], "an unconfirmed answer is sent again"
        await worker.ws.send(json.dumps({"type": "keep_alive", RECEIPT_FIELD: [again["uuid"]]}) + "\n")
        await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f.get("uuid") == sent["uuid"]
                           and f.get("status") == "processed")
        await worker.close()
        worker = await connect()
        probe = user_message("after the receipt")
        await client.post(f"/v1/sessions/{sid}/events", json={"events": [probe]}, headers=auth(owner_token))
        await worker.wait_for(lambda f: f.get("uuid") == probe["uuid"])
        assert sent["uuid"] not in [f.get("uuid") for f in worker.frames], "a confirmed answer is not sent again"
        await worker.close()
        await sub.close()


async def test_lease_lapse_redispatches_and_old_work_is_gone(tmp_path: object) -> None:
    import pathlib

    with ServerProcess(pathlib.Path(str(tmp_path)), lease_ttl_s=1.0, lease_check_interval_s=0.2,
                       poll_timeout_s=3.0) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            item, wtoken = await take_work(client, env)
            # nobody heartbeats: the lease lapses and the session is queued again
            second = None
            deadline = time.monotonic() + 10
            while second is None and time.monotonic() < deadline:
                second = await poll(client, env)
            assert second is not None and second["data"]["id"] == sid and second["id"] != item["id"]
            envid = env["environment_id"]
            r = await client.post(f"/v1/environments/{envid}/work/{item['id']}/heartbeat", json={},
                                  headers=auth(wtoken))
            assert r.status_code == 410
            from tether.protocol.work_secret import decode_work_secret

            token2 = decode_work_secret(second["secret"]).session_ingress_token
            r = await client.post(f"/v1/environments/{envid}/work/{second['id']}/heartbeat", json={},
                                  headers=auth(token2))
            assert r.status_code == 200
            body = r.json()
            assert body["lease_extended"] is True and body["ttl_seconds"] == 1


async def test_unacked_work_is_reclaimed(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sid = await create_session(client, owner_token, env["environment_id"])
        first = await poll(client, env)
        assert first is not None and first["data"]["id"] == sid
        envid = env["environment_id"]
        r = await client.get(f"/v1/environments/{envid}/work/poll?reclaim_older_than_ms=1",
                             headers=auth(env["environment_secret"]))
        again = r.json()
        assert again is not None and again["id"] == first["id"], "an un-acked item is delivered again"


async def test_sigkill_loses_no_acknowledged_event(tmp_path: object) -> None:
    import pathlib

    srv = ServerProcess(pathlib.Path(str(tmp_path)), limits={"rate_per_second": 0}).start()
    try:
        token = srv.token()
        acked: list[str] = []
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            _, wtoken = await take_work(client, env)

            enough = asyncio.Event()

            async def writer() -> None:
                for i in range(100_000):
                    ev = assistant(f"e{i}")
                    try:
                        await worker_post(client, sid, wtoken, ev)
                    except (httpx.HTTPError, AssertionError):
                        return
                    acked.append(ev["uuid"])
                    if len(acked) >= 200:
                        enough.set()

            task = asyncio.create_task(writer())
            await asyncio.wait_for(enough.wait(), 30)
            srv.kill()
            await asyncio.wait_for(task, 10)
        srv.start()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            all_ids = await _all_uuids(client, sid, token)
            missing = set(acked) - set(all_ids)
            assert not missing, f"{len(missing)} acknowledged events lost"
            assert len(all_ids) == len(set(all_ids))
    finally:
        srv.stop()


async def _all_uuids(client: httpx.AsyncClient, sid: str, token: str) -> list[str]:
    out: list[str] = []
    r = await client.get(f"/v1/sessions/{sid}/events?limit=1000&anchor_to_latest=true", headers=auth(token))
    page = r.json()
    first = page["first_id"]
    out = [e["uuid"] for e in page["data"]]
    while page["has_more"]:
        r = await client.get(f"/v1/sessions/{sid}/events?limit=1000&before_id={first}", headers=auth(token))
        page = r.json()
        out = [e["uuid"] for e in page["data"]] + out
        first = page["first_id"]
    return out


async def test_a_departed_worker_leaves_no_stuck_permission_prompt(tmp_path: object) -> None:
    import pathlib

    with ServerProcess(pathlib.Path(str(tmp_path)), lease_ttl_s=1.0, lease_check_interval_s=0.2) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            _, wtoken = await take_work(client, env)
            sub = await subscribe(srv.ws_url, sid, token)
            ask = {"type": "control_request", "request_id": "req-gone", "request": {
                "subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}, "tool_use_id": "t1"}}
            await worker_post(client, sid, wtoken, ask)
            await sub.wait_for(lambda f: f.get("request_id") == "req-gone" and f["type"] == "control_request")
            # the worker never heartbeats: its lease lapses and the prompt is settled for every client
            cancel = await sub.wait_for(lambda f: f.get("type") == "control_cancel_request", timeout=15)
            assert cancel["request_id"] == "req-gone" and cancel["reason"] == "lease_lapsed"
            perms = (await client.get(f"/v1/sessions/{sid}/permissions", headers=auth(token))).json()["data"]
            assert [p["status"] for p in perms] == ["expired"]
            late = await subscribe(srv.ws_url, sid, token)
            await late.ws.send('{"type":"keep_alive"}')
            await late.wait_for(lambda f: f.get("type") == "keep_alive")
            assert not [f for f in late.frames if f.get("type") == "control_request"], "no stale prompt on connect"
            await sub.close()
            await late.close()
