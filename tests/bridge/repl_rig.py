"""A front end for the REPL bridge core tests: it holds a conversation in memory (the test plays the
agent by appending messages) and records what the core hands it. Real server, real transports."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth, subscribe

from tether.bridge.repl import BridgeInfo, RemoteControl, ReplBridgeConfig, ReplBridgeOptions
from tether.client.credentials import CredentialStore
from tether.protocol.bridge_state import BridgeStatus
from tether.protocol.messages import PermissionDecision, control_request, user_message

Message = dict[str, Any]


def prompt(text: str) -> Message:
    return user_message(text, str(uuid.uuid4()), session_id="")


def reply(text: str) -> Message:
    return {"type": "assistant", "uuid": str(uuid.uuid4()), "parent_tool_use_id": None,
            "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


def ask(tool: str = "Bash", **tool_input: Any) -> Message:
    return control_request("can_use_tool", str(uuid.uuid4()), tool_name=tool, input=tool_input or {"command": "ls"},
                           tool_use_id=f"toolu_{uuid.uuid4().hex[:8]}")


@dataclass
class ScriptedFront:
    """Implements :class:`tether.bridge.repl.FrontEnd`."""

    conversation: list[Message] = field(default_factory=list)
    prompts: list[Message] = field(default_factory=list)
    settled: list[tuple[str, PermissionDecision]] = field(default_factory=list)
    interrupts: int = 0
    models: list[str | None] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    states: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    info: BridgeInfo | None = None
    status: BridgeStatus | None = None
    title_answer: str | None = None
    title_requests: list[list[str]] = field(default_factory=list)
    terminal_requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    terminal_answer: str | None = None

    def transcript(self) -> Sequence[Message]:
        return self.conversation

    def deliver_prompt(self, message: Message) -> None:
        self.prompts.append(message)
        self.conversation.append(message)

    def permission_settled(self, request_id: str, decision: PermissionDecision) -> None:
        self.settled.append((request_id, decision))

    def interrupt(self) -> None:
        self.interrupts += 1

    def set_model(self, model: str | None) -> str | None:
        self.models.append(model)
        return None

    def set_permission_mode(self, mode: str) -> str | None:
        self.modes.append(mode)
        return None if mode != "bypassPermissions" else "bypass is not allowed here"

    def terminal_request(self, subtype: str, request: Mapping[str, Any]) -> str | None:
        self.terminal_requests.append((subtype, dict(request)))
        return self.terminal_answer

    def bridge_changed(self, status: BridgeStatus | None, info: BridgeInfo | None) -> None:
        self.status = status
        if info is not None:
            self.info = info
        state = status.state if status is not None else "off"
        if not self.states or self.states[-1] != state:
            self.states.append(state)

    def bridge_notice(self, text: str) -> None:
        self.notices.append(text)

    async def generate_title(self, prompts: Sequence[str]) -> str | None:
        self.title_requests.append(list(prompts))
        return self.title_answer


@dataclass
class Rig:
    server: ServerProcess
    token: str
    home: pathlib.Path
    front: ScriptedFront
    rc: RemoteControl
    tg: asyncio.TaskGroup
    http: httpx.AsyncClient

    @property
    def session_id(self) -> str:
        assert self.front.info is not None and self.front.info.session_id is not None
        return self.front.info.session_id

    def say(self, *messages: Message) -> None:
        """The conversation goes on: append and hand to the bridge (what a front end does)."""
        self.front.conversation.extend(messages)
        if self.rc.core is not None:
            self.rc.core.write_messages(messages)

    async def start(self, **kwargs: Any) -> None:
        assert self.rc.start(self.tg, **kwargs)
        await eventually(lambda: self.front.status is not None and self.front.status.state in ("ready", "connected")
                         and self.front.info is not None and self.front.info.session_id, 30, message="the bridge")

    async def connected(self) -> None:
        await eventually(lambda: self.front.status is not None and self.front.status.state == "connected", 30,
                         message="the bridge to connect")

    async def subscribe(self, from_seq: int | None = 0) -> Receiver:
        return await subscribe(self.server.ws_url, self.session_id, self.token, from_seq)

    async def session(self) -> dict[str, Any]:
        r = await self.http.get(f"/v1/sessions/{self.session_id}", headers=auth(self.token))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def post_prompt(self, text: str) -> Message:
        msg = user_message(text, str(uuid.uuid4()), session_id="")
        r = await self.http.post(f"/v1/sessions/{self.session_id}/events", json={"events": [msg]},
                                 headers=auth(self.token))
        assert r.status_code == 200, r.text
        return msg


def fast_config(**overrides: float) -> ReplBridgeConfig:
    values: dict[str, float] = {"status_tick_s": 0.05, "auto_disable_after_s": 1.0, **overrides}
    return ReplBridgeConfig(**values)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def rig(server: ServerProcess, token: str, home: pathlib.Path, *, config: ReplBridgeConfig | None = None,
              **options: Any) -> AsyncIterator[Rig]:
    """A front end with remote control available (not started) in its own task group."""
    front = ScriptedFront()
    await asyncio.to_thread(home.mkdir, parents=True, exist_ok=True)
    opts = ReplBridgeOptions(directory=home, machine_name=socket.gethostname(), home=home, **options)
    store = CredentialStore(home, environ={"TETHER_SERVER": server.url, "TETHER_TOKEN": token})
    rc = RemoteControl(front, opts, store=store, config=config or fast_config())
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as http, asyncio.TaskGroup() as tg:
        the_rig = Rig(server, token, home, front, rc, tg, http)
        try:
            yield the_rig
        finally:
            await rc.stop()
