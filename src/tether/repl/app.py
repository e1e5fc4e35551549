"""``tether`` / ``tether chat``: an interactive session with an agent in this directory, which
remote control can share mid-conversation (docs/protocol.md §12).

:class:`Repl` is a front end of the REPL bridge (:class:`tether.bridge.repl.FrontEnd`): it runs
the agent (:class:`~tether.repl.agent_link.AgentLink`), shows its output (:mod:`tether.repl.render`),
asks permission questions in the terminal, and — when remote control is on — hands every message
of the conversation to the bridge and runs what remote clients send: prompts (shown as remote),
permission answers (the first answer wins, here or there), interrupts.

Input is prompt_toolkit (history, multi-line, Ctrl-C stops a turn, Ctrl-D exits) with the bridge
state in the footer; output is rich, printed above the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import uuid as uuidlib
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import HTML, FormattedText
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console, RenderableType
from rich.text import Text

from tether.bridge.repl import BridgeInfo, RemoteControl
from tether.protocol import messages as m
from tether.protocol.bridge_state import BridgeStatus
from tether.repl import render
from tether.repl.agent_link import AgentLink, AgentRequestFailed
from tether.repl.commands import REMOTE_SAFE, CommandError, is_command, parse_answer, parse_command
from tether.repl.slash import SlashCommands

log = logging.getLogger("tether.repl")
TRANSCRIPT_LIMIT: Final = 10_000
_RESTART: Final = "\x00restart-prompt\x00"


@dataclass
class Question:
    """A permission question of the agent, asked here (and on every client while shared)."""

    request_id: str
    message: dict[str, Any]

    @property
    def request(self) -> dict[str, Any]:
        inner = self.message.get("request")
        return inner if isinstance(inner, dict) else {}

    @property
    def tool(self) -> str:
        return str(self.request.get("tool_name", "a tool"))


@dataclass
class Costs:
    usd: float = 0.0
    turns: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, result: Mapping[str, Any]) -> None:
        self.turns += 1
        cost = result.get("total_cost_usd")
        self.usd += float(cost) if isinstance(cost, int | float) else 0.0
        usage = result.get("usage") if isinstance(result.get("usage"), Mapping) else {}
        assert isinstance(usage, Mapping)
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)


@dataclass
class ReplSettings:
    cwd: pathlib.Path
    agent_description: str
    permission_mode: str | None = None
    server: str | None = None
    remote_control: bool = False
    name: str | None = None
    mirror: bool = False
    history_file: pathlib.Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Repl(SlashCommands):
    def __init__(self, settings: ReplSettings, agent: AgentLink, rc: RemoteControl | None) -> None:
        self.settings = settings
        self.agent = agent
        self.rc = rc
        self.conversation: deque[dict[str, Any]] = deque(maxlen=TRANSCRIPT_LIMIT)
        self.questions: dict[str, Question] = {}
        self.costs = Costs()
        self.running_turns = 0
        self.model: str | None = None
        self.renamed: str | None = settings.name
        self.bridge: tuple[BridgeStatus | None, BridgeInfo | None] = (None, None)
        self._shown_url: str | None = None
        self.console = Console(highlight=False)
        self.session: PromptSession[str] | None = None
        self.tg: asyncio.TaskGroup | None = None
        self.exiting = False

    # ---- output --------------------------------------------------------------------------------

    def show(self, *items: RenderableType) -> None:
        for item in items:
            self.console.print(item)

    def redraw(self) -> None:
        app = self.session.app if self.session is not None else None
        if app is not None and app.is_running:
            app.invalidate()

    def restart_prompt(self) -> None:
        """Abandon the line being edited and prompt again (the question it answered is gone)."""
        app = self.session.app if self.session is not None else None
        if app is not None and app.is_running and not app.is_done:
            app.exit(result=_RESTART)

    def spawn(self, coro: Any, name: str) -> None:
        if self.tg is None:
            coro.close()
            return
        self.tg.create_task(self._guarded(coro, name), name=name)

    async def _guarded(self, coro: Any, name: str) -> None:
        try:
            await coro
        except Exception as exc:
            log.exception("%s failed", name)
            self.show(render.notice(f"internal error ({name}): {exc!r}", "red"))

    @property
    def core(self) -> Any:
        return self.rc.core if self.rc is not None else None

    # ---- the conversation ------------------------------------------------------------------------

    def record(self, msg: dict[str, Any]) -> None:
        """A message of the conversation: kept for the history flush, and shared when on."""
        self.conversation.append(msg)
        if self.core is not None:
            self.core.write_messages([msg])

    async def send_prompt(self, text: str, *, remote: dict[str, Any] | None = None) -> None:
        msg = remote if remote is not None else m.user_message(text, str(uuidlib.uuid4()), session_id="")
        if not self.agent.running:
            self.show(render.notice("The agent is not running; /clear starts a new one.", "red"))
            return
        if remote is None:
            self.record(msg)
        else:
            self.conversation.append(msg)  # already in the session's log: not written back
        self.running_turns += 1
        self.redraw()
        await self.agent.send(msg)

    def on_agent_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        core = self.core
        if kind == m.ASSISTANT:
            self.show(*render.assistant(msg, str(self.settings.cwd)))
            self.record(msg)
        elif kind == m.USER and not msg.get("isReplay"):
            self.show(*render.tool_results(msg))
            self.record(msg)
        elif kind == m.RESULT:
            self.running_turns = max(0, self.running_turns - 1)
            self.costs.add(msg)
            self.conversation.append(msg)  # not shared as such: the bridge writes one result per turn
            self.show(render.turn_end(msg))
            if core is not None:
                core.send_result(msg)
            self.redraw()
        elif kind == m.CONTROL_REQUEST and m.control_subtype(msg) == m.CAN_USE_TOOL:
            self._ask(msg)
        elif kind == m.CONTROL_REQUEST:
            self._refuse_agent_request(msg)
        elif kind == m.CONTROL_CANCEL_REQUEST:
            rid = m.request_id_of(msg)
            if rid is not None and self.questions.pop(rid, None) is not None:
                self.show(render.notice("(the question was withdrawn)", "dim"))
                if core is not None:
                    core.withdraw_permission(rid)
                self.restart_prompt()
        elif kind == m.SYSTEM and msg.get("subtype") == "init" and isinstance(msg.get("model"), str):
            self.model = msg["model"]

    def _refuse_agent_request(self, msg: dict[str, Any]) -> None:
        """The agent asks its host something the REPL does not offer (hooks, MCP): a clear no."""
        rid = m.request_id_of(msg)
        if rid is not None:
            self.spawn(self.agent.send(m.control_error(rid, f"Unsupported control request subtype: "
                                                            f"{m.control_subtype(msg)}")), "agent-refuse")

    # ---- permission questions ----------------------------------------------------------------------

    def _ask(self, msg: dict[str, Any]) -> None:
        rid = m.request_id_of(msg)
        if rid is None:
            return
        self.questions[rid] = Question(rid, msg)
        self.show(render.permission_card(msg, str(self.settings.cwd)))
        if self.core is not None:
            self.core.ask_permission(msg)
        self.restart_prompt()

    def current_question(self) -> Question | None:
        return next(iter(self.questions.values()), None)

    async def answer(self, question: Question, text: str) -> None:
        decision = parse_answer(text, question.request)
        if decision is None:
            self.show(render.notice(f"Answer with {render.ANSWER_HINT}"))
            return
        if self.questions.pop(question.request_id, None) is None:
            return  # answered elsewhere meanwhile
        if self.core is not None and not self.core.answer_permission(question.request_id, decision):
            return  # a remote client won the race: permission_settled gave the agent its answer
        verdict = "allowed" if isinstance(decision, m.PermissionAllow) else "denied"
        self.show(render.notice(f"{verdict} {question.tool}", "dim"))
        await self.agent.send(m.control_success(question.request_id, decision.to_json()))

    # ---- FrontEnd (what the bridge calls) ----------------------------------------------------------

    def transcript(self) -> Sequence[dict[str, Any]]:
        return list(self.conversation)

    def deliver_prompt(self, message: dict[str, Any]) -> None:
        text = render.user_text(message)
        self.show(render.remote_prompt(message))
        if is_command(text):
            try:
                command = parse_command(text)
            except CommandError:
                command = None
            if command is not None and command.name in REMOTE_SAFE:
                self.conversation.append(message)
                self.spawn(self.run_command(command, remote=True), "remote-command")
                return
        self.spawn(self.send_prompt(text, remote=message), "remote-prompt")

    def permission_settled(self, request_id: str, decision: m.PermissionDecision) -> None:
        question = self.questions.pop(request_id, None)
        if question is None:
            return
        verdict = "allowed" if isinstance(decision, m.PermissionAllow) else "denied"
        self.show(render.notice(f"{verdict} {question.tool} on another device", "magenta"))
        self.spawn(self.agent.send(m.control_success(request_id, decision.to_json())), "remote-answer")
        self.restart_prompt()

    def interrupt(self) -> None:
        if self.running_turns or self.questions:
            self.show(render.notice("Stopped from another device.", "magenta"))
            self.agent.interrupt()

    def set_model(self, model: str | None) -> str | None:
        self.spawn(self._set(m.SET_MODEL, model=model or "default"), "set-model")
        return None

    def set_permission_mode(self, mode: str) -> str | None:
        if mode not in m.PERMISSION_MODES:
            return f"unknown permission mode {mode!r}"
        if mode == "bypassPermissions" and self.settings.permission_mode != "bypassPermissions":
            return ("Cannot switch to bypassPermissions remotely: start tether with --permission-mode "
                    "bypassPermissions for that.")
        self.spawn(self._set(m.SET_PERMISSION_MODE, mode=mode), "set-mode")
        return None

    async def _set(self, subtype: str, **fields: Any) -> None:
        try:
            await self.agent.request(subtype, **fields)
            self.show(render.notice(f"{subtype.replace('_', ' ')}: {next(iter(fields.values()))} (remote)", "dim"))
        except AgentRequestFailed as exc:
            self.show(render.notice(f"{subtype} failed: {exc}", "red"))

    def terminal_request(self, subtype: str, request: Mapping[str, Any]) -> str | None:
        return "This session runs in the tether REPL: it has no terminal to hand over (see `tether claude`)."

    def bridge_changed(self, status: BridgeStatus | None, info: BridgeInfo | None) -> None:
        self.bridge = (status, info if info is not None or status is None else self.bridge[1])
        url = info.session_url if info is not None else None
        if url and url != self._shown_url and status is not None and status.state in ("ready", "connected"):
            self._shown_url = url
            what = "Mirroring" if info is not None and info.mirror else "Remote Control active"
            self.show(render.notice(f"{what} · {url}  (/rc qr: QR code · /rc: stop sharing)", "green"))
        if status is None:
            self._shown_url = None
        self.redraw()

    def bridge_notice(self, text: str) -> None:
        self.show(render.notice(text, "red" if "failed" in text or "disabled" in text else "yellow"))

    async def generate_title(self, prompts: Sequence[str]) -> str | None:
        try:
            answer = await self.agent.request(m.GENERATE_SESSION_TITLE, timeout=30.0,
                                              description="\n".join(prompts[-20:]), persist=False)
        except AgentRequestFailed as exc:
            log.info("no title from the agent: %s", exc)
            return None
        title = answer.get("title")
        return title if isinstance(title, str) and title.strip() else None

    # ---- input ---------------------------------------------------------------------------------

    def prompt_message(self) -> FormattedText:
        question = self.current_question()
        if question is not None:
            return FormattedText([("bold ansiyellow", f"Allow {question.tool}? [y/a/n/d …] › ")])
        return FormattedText([("bold", "› ")])

    def toolbar(self) -> HTML | FormattedText:
        status, info = self.bridge
        parts: list[tuple[str, str]] = []
        if status is None:
            parts.append(("", " Remote Control off · /rc to share "))
        else:
            style = {"failed": "bg:ansired ansiwhite", "reconnecting": "bg:ansiyellow ansiblack"}.get(
                status.state, "bg:ansigreen ansiblack" if status.active else "")
            label = status.footer_label()
            if info is not None and info.mirror and status.active:
                label = "Remote Control mirror (outbound only)"
            parts.append((style, f" {label} "))
            if status.detail and status.state in ("failed", "reconnecting"):
                parts.append(("", f" {status.detail} "))
            elif info is not None and info.session_url:
                parts.append(("", f" {info.session_url} "))
        title = info.title if info is not None and info.title else self.renamed
        if title:
            parts.append(("bold", f"· {title} "))
        parts.append(("", f"· {'working' if self.running_turns else 'idle'} · ${self.costs.usd:.4f} "))
        return FormattedText(parts)

    def _bindings(self) -> KeyBindings:
        kb = KeyBindings()

        @kb.add("enter")
        def _enter(event: KeyPressEvent) -> None:
            buf = event.current_buffer
            if buf.text.endswith("\\") and buf.cursor_position == len(buf.text):
                buf.delete_before_cursor(1)
                buf.insert_text("\n")
            else:
                buf.validate_and_handle()

        @kb.add("escape", "enter")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        @kb.add("c-c")
        def _ctrl_c(event: KeyPressEvent) -> None:
            buf = event.current_buffer
            if self.running_turns or self.questions:
                self.agent.interrupt()
                self.show(render.notice("Interrupting…", "dim"))
            elif buf.text:
                buf.reset()
            else:
                self.show(render.notice("(Ctrl-D or /exit to leave)", "dim"))

        return kb

    async def input_loop(self) -> None:
        assert self.session is not None
        while not self.exiting:
            if not self.agent.running and self.agent.exited.is_set():
                self.show(render.notice(f"The agent exited (status {self.agent.exit_code}). /clear starts a new "
                                        "one, /exit leaves.", "red"))
                self.agent.exited.clear()
            try:
                text = await self.session.prompt_async(self.prompt_message)
            except EOFError:
                return
            except KeyboardInterrupt:
                continue
            if text == _RESTART:
                continue
            self.echo(text)
            await self.handle_input(text)

    def echo(self, text: str) -> None:
        """The accepted line, kept in the scrollback (the prompt itself is erased when done)."""
        if not text.strip():
            return
        style = "bold yellow" if self.current_question() is not None else "bold"
        self.show(Text.assemble(("› ", style), text))

    async def handle_input(self, text: str) -> None:
        question = self.current_question()
        if question is not None:
            await self.answer(question, text)
            return
        if not text.strip():
            return
        if is_command(text):
            try:
                command = parse_command(text)
            except CommandError as exc:
                self.show(render.notice(str(exc), "red"))
                return
            await self.run_command(command)
            return
        await self.send_prompt(text)

    # ---- life ------------------------------------------------------------------------------------

    async def run(self) -> int:
        history = (FileHistory(str(self.settings.history_file)) if self.settings.history_file is not None
                   else InMemoryHistory())
        with patch_stdout(raw=True):
            self.console = Console(highlight=False, force_terminal=True)
            self.session = PromptSession(history=history, key_bindings=self._bindings(), multiline=True,
                                         bottom_toolbar=self.toolbar, prompt_continuation="  ",
                                         refresh_interval=0.5, erase_when_done=True)
            try:
                async with asyncio.TaskGroup() as tg:
                    self.tg = tg
                    await self.agent.start()
                    self.banner()
                    if self.settings.remote_control and self.rc is not None:
                        self.rc.start(tg, name=self.settings.name, mirror=self.settings.mirror)
                    await self.input_loop()
                    self.exiting = True
                    await self.shutdown()
            finally:
                self.tg = None
        return 0

    async def shutdown(self) -> None:
        """Leave in order: remote control off (its teardown), then the agent."""
        if self.rc is not None and self.rc.active:
            self.show(render.notice("Stopping Remote Control…", "dim"))
            with contextlib.suppress(Exception):
                await self.rc.stop()
        await self.agent.stop()
