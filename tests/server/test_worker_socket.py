"""The v1 worker socket's send side (api/ingress.py on server/reader.py): the `initialize` deadline
(docs/protocol.md §8.1, §8.5), and delivery states that reach subscribers at once and the store
in batches, without a write per event (server/delivery.py)."""

from __future__ import annotations

import asyncio
import pathlib
import time
import uuid
from typing import Any

import httpx
import pytest
from tests.server.test_direct import counters
from tests.support.server import ServerProcess, wait_until
from tests.support.worker import (
    Receiver,
    auth,
    connect_worker,
    create_session,
    register,
    subscribe,
    take_work,
    user_message,
    worker_post,
)

pytestmark = pytest.mark.anyio


def init_answer(request_id: str) -> dict[str, Any]:
    return {"type": "control_response", "uuid": str(uuid.uuid4()),
            "response": {"subtype": "success", "request_id": request_id, "response": {"commands": []}}}


async def initialize_id(worker: Receiver) -> str:
    frame = await worker.wait_for(lambda f: f.get("type") == "control_request")
    assert frame["request"]["subtype"] == "initialize"
    return str(frame["request_id"])


async def test_a_worker_that_never_answers_initialize_is_closed_1008(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, initialize_timeout_s=1.0) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            _, wtoken = await take_work(client, env)
            on_socket = await connect_worker(srv.ws_url, sid, wtoken)
            await on_socket.ws.send(orjson_line(init_answer(await initialize_id(on_socket))))
            by_post = await connect_worker(srv.ws_url, sid, wtoken)  # a hybrid worker answers with I2
            await worker_post(client, sid, wtoken, init_answer(await initialize_id(by_post)))
            silent = await connect_worker(srv.ws_url, sid, wtoken)
            opened = time.monotonic()
            await initialize_id(silent)
            code, reason = await asyncio.wait_for(silent.closed, 10)
            assert (code, reason) == (1008, "initialize not answered within 1 s")
            assert time.monotonic() - opened >= 0.9, "not before the deadline"
            # the deadlines of the two that answered (opened earlier) have passed too: still open
            probe = user_message("still there?")
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [probe]}, headers=auth(token))
            assert r.status_code == 200
            for worker in (on_socket, by_post):
                await worker.wait_for(lambda f: f.get("uuid") == probe["uuid"])
                assert not worker.closed.done()
                await worker.close()
            assert (await counters(client)).get("worker_initialize_timeouts_total") == 1


def orjson_line(obj: dict[str, Any]) -> str:
    import orjson

    return orjson.dumps(obj).decode() + "\n"


async def test_sending_moves_delivery_once_per_event_in_batched_writes(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path, delivery_flush_s=0.2) as srv:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            _, wtoken = await take_work(client, env)
            sub = await subscribe(srv.ws_url, sid, token)
            workers = [await connect_worker(srv.ws_url, sid, wtoken) for _ in range(3)]
            for worker in workers:
                await worker.ws.send(orjson_line(init_answer(await initialize_id(worker))))
            before = await counters(client)
            prompts = [user_message(f"p{i}") for i in range(20)]
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": prompts}, headers=auth(token))
            assert r.status_code == 200
            for worker in workers:  # three sockets send every prompt ...
                await worker.wait_for(lambda f: f.get("uuid") == prompts[-1]["uuid"])
            # ... and the subscriber hears of each move once
            await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["uuid"] == prompts[-1]["uuid"])
            updates = [f for f in sub.frames if f.get("type") == "delivery_update"]
            assert [(u["uuid"], u["status"]) for u in updates] == [(p["uuid"], "received") for p in prompts]

            def stored_states() -> list[str]:
                r = httpx.get(f"{srv.url}/web/sessions/{sid}/undelivered", headers=auth(token))
                return [row["status"] for row in r.json()["data"]]

            await asyncio.to_thread(wait_until, lambda: stored_states() == ["received"] * len(prompts), 10, 0.05,
                                    "the next batch to be written")
            after = await counters(client)
            writes = after.get("delivery_writes_total", 0) - before.get("delivery_writes_total", 0)
            moved = after.get("delivery_moves_written_total", 0) - before.get("delivery_moves_written_total", 0)
            assert moved == len(prompts) and 1 <= writes < len(prompts) / 4, "one write per batch, not per event"
            for worker in workers:
                await worker.close()
            await sub.close()


async def test_a_confirmed_control_is_not_resent_after_a_graceful_restart(tmp_path: pathlib.Path) -> None:
    # a long interval: only the shutdown's last write can have stored the confirmation
    srv = ServerProcess(tmp_path, delivery_flush_s=60.0).start()
    try:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            _, wtoken = await take_work(client, env)
            sub = await subscribe(srv.ws_url, sid, token)
            worker = await connect_worker(srv.ws_url, sid, wtoken)
            await worker.ws.send(orjson_line(init_answer(await initialize_id(worker))))
            interrupt = {"type": "control_request", "request_id": "req-1", "uuid": str(uuid.uuid4()),
                         "request": {"subtype": "interrupt"}}
            r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [interrupt]}, headers=auth(token))
            assert r.status_code == 200
            await worker.wait_for(lambda f: f.get("uuid") == interrupt["uuid"])
            # the worker speaks after it: the interrupt counts as processed (docs/protocol.md §4.4)
            await worker.ws.send(orjson_line({"type": "system", "subtype": "status", "uuid": str(uuid.uuid4())}))
            await sub.wait_for(lambda f: f.get("type") == "delivery_update" and f["status"] == "processed")
            r = await client.get(f"/web/sessions/{sid}/undelivered", headers=auth(token))
            assert [row["status"] for row in r.json()["data"]] == ["pending"], "told, not written yet"
            await sub.close()
        srv.restart()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            r = await client.get(f"/web/sessions/{sid}/undelivered", headers=auth(token))
            assert r.json()["data"] == [], "the confirmation was written at shutdown"
            worker = await connect_worker(srv.ws_url, sid, wtoken)
            await worker.ws.send(orjson_line(init_answer(await initialize_id(worker))))
            probe = user_message("after the restart")
            await client.post(f"/v1/sessions/{sid}/events", json={"events": [probe]}, headers=auth(token))
            await worker.wait_for(lambda f: f.get("uuid") == probe["uuid"])
            assert interrupt["uuid"] not in [f.get("uuid") for f in worker.frames], "not sent again"
            await worker.close()
    finally:
        srv.stop()
