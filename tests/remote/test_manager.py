"""RemoteSessionManager against a real `tether server` process and a scripted v1 worker (real sockets):
history then live with no gap across a server restart, 4003 ends the stream, the first answer wins
and reaches every client, unsupported control requests are answered at once, viewers write nothing
(client-side for --viewer, server-side for viewer-role tokens)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import (
    auth,
    connect_worker,
    create_session,
    register,
    take_work,
    worker_post,
)
from tether.client.api import ApiClient
from tether.client.credentials import Credentials
from tether.errors import BridgeFatalError
from tether.protocol.sdk_adapter import AssistantText, PermissionPrompt, ServerError
from tether.remote.manager import Connection, PermissionSettled, ReadOnly, RemoteSessionManager, ViewItem

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]


class RecordingView:
    def __init__(self) -> None:
        self.items: list[ViewItem] = []

    def show(self, item: ViewItem) -> None:
        self.items.append(item)

    def texts(self) -> list[str]:
        return [i.text for i in self.items if isinstance(i, AssistantText)]

    async def wait(self, predicate: Callable[[ViewItem], bool], message: str, timeout: float = 20) -> ViewItem:
        return await eventually(lambda: next((i for i in self.items if predicate(i)), None), timeout,
                                message=message)


@dataclass
class Rig:
    server: ServerProcess
    http: httpx.AsyncClient
    token: str
    session_id: str
    worker_token: str

    async def post(self, *events: dict[str, Any]) -> None:
        await worker_post(self.http, self.session_id, self.worker_token, *events)

    async def manager(self, view: RecordingView, *, token: str | None = None, viewer: bool = False) -> tuple[
            RemoteSessionManager, ApiClient]:
        api = ApiClient(self.server.url, Credentials(server=self.server.url, access_token=token or self.token,
                                                     kind="personal", source="env"))
        session = await api.get_session(self.session_id)
        return RemoteSessionManager(api, session, view, viewer=viewer), api


def assistant(text: str) -> dict[str, Any]:
    return {"type": "assistant", "uuid": str(uuid.uuid4()), "session_id": "",
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


def can_use_tool(rid: str) -> dict[str, Any]:
    return {"type": "control_request", "request_id": rid, "uuid": str(uuid.uuid4()),
            "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"},
                        "tool_use_id": f"toolu_{rid}"}}


@pytest.fixture
async def rig(server: ServerProcess, owner_token: str) -> AsyncIterator[Rig]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        env = await register(http, owner_token)
        sid = await create_session(http, owner_token, env["environment_id"], title=f"rig {uuid.uuid4()}")
        _item, worker_token = await take_work(http, env)
        yield Rig(server, http, owner_token, sid, worker_token)


async def following(manager: RemoteSessionManager, view: RecordingView) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(manager.run())
    await view.wait(lambda i: isinstance(i, Connection) and i.state == "connected", "the socket to connect")
    return task


async def test_history_then_live_without_gaps_across_a_server_restart(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    server = ServerProcess(tmp_path_factory.mktemp("restart"), limits={"rate_per_second": 0}).start()
    try:
        token = server.token()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            env = await register(http, token)
            sid = await create_session(http, token, env["environment_id"], title="restart")
            _item, worker_token = await take_work(http, env)
            rig = Rig(server, http, token, sid, worker_token)
            await rig.post(*(assistant(f"A{n}") for n in range(1, 4)))
            view = RecordingView()
            manager, api = await rig.manager(view)
            assert await manager.load_history() == 3
            task = await following(manager, view)
            await rig.post(assistant("A4"))
            await view.wait(lambda i: isinstance(i, AssistantText) and i.text == "A4", "A4 live")

            server.restart()  # SIGTERM: subscribers get 1012 and come back with from_sequence_num
            await rig.post(assistant("A5"), assistant("A6"))  # likely before the client is back
            await view.wait(lambda i: isinstance(i, Connection) and i.text.startswith("Reconnected"), "a resume")
            await rig.post(assistant("A7"))
            await view.wait(lambda i: isinstance(i, AssistantText) and i.text == "A7", "A7 after the restart")
            assert view.texts() == [f"A{n}" for n in range(1, 8)]  # every event once, in order
            await manager.detach()
            stop = await task
            assert stop.reason == "stopped"
            await api.aclose()
    finally:
        server.stop()


async def test_a_revoked_token_ends_the_stream_with_4003(rig: Rig) -> None:
    r = await rig.http.post("/v1/tokens", json={"name": "attach"}, headers=auth(rig.token))
    assert r.status_code == 200, r.text
    personal = r.json()
    view = RecordingView()
    manager, api = await rig.manager(view, token=personal["token"])
    task = await following(manager, view)
    r = await rig.http.delete(f"/v1/tokens/{personal['id']}", headers=auth(rig.token))
    assert r.status_code == 200, r.text
    manager.reconnect()
    stop = await asyncio.wait_for(task, 20)
    assert stop.reason == "unauthorized" and stop.code == 4003
    ended = [i for i in view.items if isinstance(i, Connection) and i.state == "ended"]
    assert ended and "4003" in ended[0].text and "tether login" in ended[0].text
    await api.aclose()


async def test_first_answer_wins_and_the_resolution_reaches_every_client(rig: Rig) -> None:
    worker = await connect_worker(rig.server.ws_url, rig.session_id, rig.worker_token)
    views = [RecordingView(), RecordingView()]
    pairs = [await rig.manager(v) for v in views]
    tasks = [await following(m, v) for (m, _), v in zip(pairs, views, strict=True)]
    rid = str(uuid.uuid4())
    await rig.post(can_use_tool(rid))
    for view in views:
        await view.wait(lambda i: isinstance(i, PermissionPrompt) and i.request_id == rid, "the question")
    first, second = pairs[0][0], pairs[1][0]
    assert await first.answer(True)
    for view in views:
        settled = await view.wait(lambda i: isinstance(i, PermissionSettled), "the resolution")
        assert isinstance(settled, PermissionSettled)
        assert settled.prompt.request_id == rid and settled.outcome == "allow"
    assert len(first.permissions) == 0 and len(second.permissions) == 0
    assert not await second.answer(False)  # nothing open any more: nothing is sent
    delivered = await worker.wait_for(lambda f: f.get("type") == "control_response", timeout=20)
    assert delivered["response"]["request_id"] == rid
    assert delivered["response"]["response"] == {"behavior": "allow", "updatedInput": {"command": "ls"}}
    for (manager, api), task in zip(pairs, tasks, strict=True):
        await manager.detach()
        await task
        await api.aclose()
    await worker.close()


async def test_an_unsupported_control_request_is_answered_at_once(rig: Rig) -> None:
    view = RecordingView()
    manager, api = await rig.manager(view)
    task = await following(manager, view)
    rid = str(uuid.uuid4())
    await rig.post({"type": "control_request", "request_id": rid, "uuid": str(uuid.uuid4()),
                    "request": {"subtype": "hook_callback", "callback_id": "x"}})
    await eventually(lambda: rid in manager.unsupported_answered, 20, message="the client's error answer")
    # The server had already answered it for the worker; its refusal of ours is expected and not shown.
    await eventually(lambda: manager.refusals_expected == 0, 20, message="the server's refusal")
    assert not [i for i in view.items if isinstance(i, ServerError)]
    await manager.detach()
    await task
    await api.aclose()


async def test_viewer_mode_sends_nothing(rig: Rig) -> None:
    view = RecordingView()
    manager, api = await rig.manager(view, viewer=True)
    task = await following(manager, view)
    rid = str(uuid.uuid4())
    await rig.post(can_use_tool(rid))
    await view.wait(lambda i: isinstance(i, PermissionPrompt), "the question (shown to viewers too)")
    with pytest.raises(ReadOnly):
        await manager.send_prompt("hello")
    with pytest.raises(ReadOnly):
        await manager.answer(True)
    with pytest.raises(ReadOnly):
        await manager.interrupt()
    assert manager.unsupported_answered == []
    r = await rig.http.get(f"/v1/sessions/{rig.session_id}/permissions", headers=auth(rig.token))
    assert [p["status"] for p in r.json()["data"] if p["request_id"] == rid] == ["pending"]
    await manager.detach()
    await task
    await api.aclose()


async def test_the_server_refuses_writes_from_a_viewer_role_token(rig: Rig) -> None:
    viewer_token = rig.server.token(user=f"viewer-{uuid.uuid4()}@example.com", role="viewer")
    view = RecordingView()
    manager, api = await rig.manager(view, token=viewer_token)  # not --viewer: the server must say no
    task = await following(manager, view)
    with pytest.raises(BridgeFatalError) as refused:
        await manager.send_prompt("hello")
    assert refused.value.status == 403
    rid = str(uuid.uuid4())
    await rig.post(can_use_tool(rid))
    await view.wait(lambda i: isinstance(i, PermissionPrompt), "the question")
    assert await manager.answer(True)
    assert await manager.interrupt()
    errors = await eventually(lambda: [i for i in view.items if isinstance(i, ServerError)][:2] if len(
        [i for i in view.items if isinstance(i, ServerError)]) >= 2 else None, 20, message="two refusals")
    assert {e.error_type for e in errors} == {"permission_error"}
    r = await rig.http.get(f"/v1/sessions/{rig.session_id}/permissions", headers=auth(rig.token))
    assert [p["status"] for p in r.json()["data"] if p["request_id"] == rid] == ["pending"]
    await manager.detach()
    await task
    await api.aclose()


async def test_history_pages_back_with_before_id(rig: Rig) -> None:
    await rig.post(*(assistant(f"H{n}") for n in range(1, 6)))
    view = RecordingView()
    manager, api = await rig.manager(view)
    assert await manager.load_history(limit=2) == 2
    assert view.texts() == ["H4", "H5"] and manager.has_more
    assert await manager.load_older(limit=2) == 2
    assert view.texts() == ["H4", "H5", "H2", "H3"] and manager.has_more
    assert await manager.load_older(limit=2) == 1
    assert view.texts()[-1] == "H1" and not manager.has_more
    assert await manager.load_older() == 0
    assert manager.tracker.high_water == 5  # live delivery resumes after the newest page, not the older ones
    await api.aclose()
