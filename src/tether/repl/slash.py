"""The REPL's slash commands (the parsing is :mod:`tether.repl.commands`).

Commands whose output a remote client should see too (``/cost``, ``/status``, ``/clear``) record
it as a ``system/local_command`` message of the conversation, which the bridge forwards as assistant
text (docs/protocol.md §7.5).
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections import deque
from typing import TYPE_CHECKING, Any

from rich.console import Console, RenderableType
from rich.text import Text

from tether.bridge.display import qr_text
from tether.bridge.repl import BridgeInfo, RemoteControl
from tether.client.credentials import CredentialsError
from tether.protocol.bridge_state import BridgeStatus
from tether.repl import render
from tether.repl.commands import Command

if TYPE_CHECKING:
    from tether.repl.agent_link import AgentLink
    from tether.repl.app import Costs, Question, ReplSettings


class SlashCommands:
    settings: ReplSettings
    agent: AgentLink
    rc: RemoteControl | None
    conversation: deque[dict[str, Any]]
    questions: dict[str, Question]
    costs: Costs
    running_turns: int
    model: str | None
    renamed: str | None
    bridge: tuple[BridgeStatus | None, BridgeInfo | None]
    console: Console
    tg: asyncio.TaskGroup | None
    exiting: bool

    def show(self, *items: RenderableType) -> None: ...
    def record(self, msg: dict[str, Any]) -> None: ...
    def redraw(self) -> None: ...
    def restart_prompt(self) -> None: ...

    def banner(self) -> None:
        self.show(Text.assemble(("tether", "bold"), f" · {self.settings.agent_description} · {self.settings.cwd}",
                                style="dim"),
                  Text("/help for commands · /rc to share this session · Ctrl-D to leave", style="dim"))

    def _local_output(self, text: str, remote: bool) -> None:
        """Show a command's output; shared with remote clients when it is one they may ask for."""
        self.show(Text(text))
        self.record({"type": "system", "subtype": "local_command", "uuid": str(uuidlib.uuid4()), "content": text})

    async def run_command(self, command: Command, *, remote: bool = False) -> None:
        name = command.name
        if name == "help":
            self.show(render.help_table())
        elif name == "exit":
            self.exiting = True
        elif name == "cost":
            c = self.costs
            self._local_output(f"Total cost: ${c.usd:.4f} · {c.turns} turn{'s' if c.turns != 1 else ''} · "
                               f"{c.input_tokens:,} input / {c.output_tokens:,} output tokens", remote)
        elif name == "status":
            self._local_output(self.status_text(), remote)
        elif name == "clear":
            await self.clear(remote)
        elif name == "rename":
            self.rename(command.text)
        elif name == "remote-control":
            await self.remote_control(command)

    def status_text(self) -> str:
        status, info = self.bridge
        rc = "off"
        if status is not None:
            rc = status.footer_label()
            if info is not None and info.session_url:
                rc += f" · {info.session_url} (core {info.core}{', mirror' if info.mirror else ''})"
            if status.detail:
                rc += f" · {status.detail}"
        try:
            server = self.rc.store.server_url(self.rc.server) if self.rc is not None else "(none)"
        except CredentialsError as exc:
            server = f"(unusable: {exc.message})"
        lines = [f"Agent: {self.settings.agent_description}", f"Model: {self.model or 'the agent’s default'}",
                 f"Directory: {self.settings.cwd}", f"Server: {server}", f"Remote Control: {rc}",
                 f"Title: {(info.title if info else None) or self.renamed or '(none yet)'}",
                 f"Turns: {self.costs.turns} · {'working' if self.running_turns else 'idle'}"]
        return "\n".join(lines)

    async def clear(self, remote: bool) -> None:
        self.questions.clear()
        self.running_turns = 0
        await self.agent.restart()
        self.conversation.clear()
        if not remote:
            self.console.clear()
        self._local_output("Conversation cleared: the agent starts fresh.", remote)
        self.restart_prompt()

    def rename(self, title: str) -> None:
        self.renamed = title
        if self.rc is not None:
            self.rc.rename(title)
        self.show(render.notice(f"Session renamed: {title}", "dim"))
        self.redraw()

    async def remote_control(self, command: Command) -> None:
        if self.rc is None:
            self.show(render.notice("Remote Control is not available here.", "red"))
            return
        if command.args[:1] == ("qr",) and not command.flags:
            _, info = self.bridge
            if info is None or not info.session_url:
                self.show(render.notice("Remote Control is not on: /rc first.", "yellow"))
                return
            self.show(Text(qr_text(info.session_url)), Text(info.session_url))
            return
        if self.rc.active:
            self.show(render.notice("Stopping Remote Control…", "dim"))
            await self.rc.stop()
            self.show(render.notice("Remote Control is off.", "yellow"))
            return
        if self.tg is None:
            return
        mirror = True if "mirror" in command.flags else None
        name = command.text or None
        if self.rc.start(self.tg, name=name, mirror=mirror):
            what = "Mirroring (outbound only)" if mirror or self.rc.options.mirror else "Starting Remote Control"
            self.show(render.notice(f"{what}…", "dim"))
