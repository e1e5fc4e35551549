"""A minimal scripted v1 worker and subscriber for server tests (real sockets)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import websockets

from tether.protocol.work_secret import decode_work_secret


async def register(client: httpx.AsyncClient, token: str, **fields: Any) -> dict[str, Any]:
    body = {"machine_name": "test-box", "directory": "/tmp/project", "branch": "main", "max_sessions": 4,
            "metadata": {"worker_type": "claude_code"}, **fields}
    r = await client.post("/v1/environments/bridge", json=body, headers=auth(token))
    r.raise_for_status()
    return dict(r.json())


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def create_session(client: httpx.AsyncClient, token: str, env_id: str | None = None,
                         **fields: Any) -> str:
    body: dict[str, Any] = {"title": fields.pop("title", None), **fields}
    if env_id:
        body["environment_id"] = env_id
    r = await client.post("/v1/sessions", json=body, headers=auth(token))
    r.raise_for_status()
    return str(r.json()["id"])


async def poll(client: httpx.AsyncClient, env: dict[str, Any]) -> dict[str, Any] | None:
    r = await client.get(f"/v1/environments/{env['environment_id']}/work/poll",
                         headers=auth(env["environment_secret"]), timeout=15)
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


async def take_work(client: httpx.AsyncClient, env: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Poll until a work item arrives; ack it; return (item, worker token)."""
    for _ in range(5):
        item = await poll(client, env)
        if item is not None:
            token = decode_work_secret(item["secret"]).session_ingress_token
            r = await client.post(f"/v1/environments/{env['environment_id']}/work/{item['id']}/ack",
                                  json={}, headers=auth(token))
            r.raise_for_status()
            return item, token
    raise AssertionError("no work item was delivered")


def user_message(text: str, msg_uuid: str | None = None) -> dict[str, Any]:
    return {"type": "user", "uuid": msg_uuid or str(uuid.uuid4()), "session_id": "",
            "parent_tool_use_id": None, "message": {"role": "user", "content": text}}


class Receiver:
    """Reads JSON frames from a websocket into a list; ``wait_for`` waits on a predicate."""

    def __init__(self, ws: Any, newline: bool = False) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.closed: asyncio.Future[tuple[int | None, str]] = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self.newline = newline
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            async for raw in self.ws:
                text = raw if isinstance(raw, str) else raw.decode()
                if self.newline:
                    assert text.endswith("\n"), f"worker frames must end with a newline: {text!r}"
                for line in text.splitlines():
                    if line.strip():
                        self.frames.append(json.loads(line))
                self._changed.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            rcvd = getattr(self.ws, "close_code", None)
            if not self.closed.done():
                self.closed.set_result((rcvd, getattr(self.ws, "close_reason", "") or ""))
            self._changed.set()

    async def wait_for(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                if self.closed.done():
                    raise AssertionError(f"socket closed {self.closed.result()} before the frame arrived")
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


async def connect_worker(ws_url: str, session_id: str, token: str, version: str = "v1") -> Receiver:
    ws = await websockets.connect(f"{ws_url}/{version}/session_ingress/ws/{session_id}",
                                  additional_headers=auth(token))
    return Receiver(ws, newline=True)


async def subscribe(ws_url: str, session_id: str, token: str, from_seq: int | None = None) -> Receiver:
    query = f"?from_sequence_num={from_seq}" if from_seq is not None else ""
    ws = await websockets.connect(f"{ws_url}/v1/sessions/ws/{session_id}/subscribe{query}",
                                  additional_headers=auth(token), max_size=4 << 20)
    return Receiver(ws)


async def worker_post(client: httpx.AsyncClient, session_id: str, token: str, *events: dict[str, Any]) -> None:
    r = await client.post(f"/v1/session_ingress/session/{session_id}/events", json={"events": list(events)},
                          headers=auth(token))
    assert r.status_code == 200, r.text
