"""Shared pieces of the bridge end-to-end tests: a client of the server's APIs and a subscriber."""

from __future__ import annotations

import asyncio
import json
import pathlib
import subprocess
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.server import ServerProcess
from tests.support.worker import Receiver, auth, subscribe, user_message


@dataclass
class Api:
    server: ServerProcess
    token: str
    client: httpx.AsyncClient

    async def create_session(self, environment_id: str, title: str = "e2e") -> str:
        r = await self.client.post("/v1/sessions", json={"environment_id": environment_id, "title": title},
                                   headers=auth(self.token))
        assert r.status_code in (200, 201), r.text
        return str(r.json()["id"])

    async def session(self, sid: str) -> dict[str, Any]:
        r = await self.client.get(f"/v1/sessions/{sid}", headers=auth(self.token))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def archive(self, sid: str) -> None:
        r = await self.client.post(f"/v1/sessions/{sid}/archive", json={}, headers=auth(self.token))
        assert r.status_code == 200, r.text

    async def prompt(self, sid: str, text: str, **fields: Any) -> dict[str, Any]:
        msg = {**user_message(text), **fields}
        r = await self.client.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(self.token))
        assert r.status_code == 200, r.text
        return msg

    async def upload(self, name: str, content: bytes, content_type: str = "text/plain") -> dict[str, str]:
        """``POST /v1/files`` (the web composer's upload); returns the ``file_attachments`` entry."""
        r = await self.client.post("/v1/files", files={"file": (name, content, content_type)},
                                   headers=auth(self.token))
        assert r.status_code == 200, r.text
        return {"file_uuid": r.json()["file_uuid"], "file_name": r.json()["file_name"]}

    async def subscribe(self, sid: str, from_seq: int | None = None) -> Receiver:
        return await subscribe(self.server.ws_url, sid, self.token, from_seq)

    async def environments(self) -> list[dict[str, Any]]:
        r = await self.client.get("/v1/environments?all=true", headers=auth(self.token))
        assert r.status_code == 200, r.text
        return list(r.json()["data"])

    async def polls_total(self) -> float:
        r = await self.client.get("/metrics")
        for line in r.text.splitlines():
            if line.startswith("tether_polls_total "):
                return float(line.split()[1])
        return 0.0


def open_api(server: ServerProcess, token: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=30)


async def answer(sub: Receiver, request: dict[str, Any], behavior: str = "allow", **extra: Any) -> None:
    """Answer a ``can_use_tool`` request from the subscriber (like the web client's buttons)."""
    inner = request["request"]
    decision: dict[str, Any] = {"behavior": behavior}
    if behavior == "allow":
        decision["updatedInput"] = inner.get("input", {})
    else:
        decision["message"] = extra.pop("message", "Denied by the remote operator")
    decision.update(extra)
    await sub.ws.send(json.dumps({"type": "control_response", "response": {
        "subtype": "success", "request_id": request["request_id"], "response": decision}}))


def is_permission(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "control_request" and (frame.get("request") or {}).get("subtype") == "can_use_tool"


def is_result(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "result"


async def turn_with_permission(api: Api, sid: str, text: str, sub: Receiver | None = None,
                               behavior: str = "allow", timeout: float = 30.0) -> tuple[Receiver, dict[str, Any]]:
    """Prompt, answer the permission request from a subscriber, return the ``result``."""
    sub = sub or await api.subscribe(sid)
    old = {id(f) for f in sub.frames}
    await api.prompt(sid, text)
    request = await sub.wait_for(lambda f: is_permission(f) and id(f) not in old, timeout=timeout)
    await answer(sub, request, behavior)
    result = await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=timeout)
    return sub, result


def fresh(sub: Receiver) -> set[int]:
    """Ids of the frames already received (to wait for later ones only)."""
    return {id(f) for f in sub.frames}


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    return await asyncio.to_thread(fn, *args, **kwargs)


def git(cwd: pathlib.Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_repo(path: pathlib.Path) -> pathlib.Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "e2e@example.com")
    git(path, "config", "user.name", "e2e")
    (path / "README.md").write_text("e2e\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "init")
    return path
