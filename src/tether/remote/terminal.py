"""`tether attach` in a terminal: the transcript printed with rich above a prompt_toolkit input line.

* Output: every view item is rendered (:mod:`tether.remote.render`) and printed above the input
  line (``patch_stdout``); the streaming text of the message being written, the session's state
  and the connection live in the bottom bar.
* Input: a line is a prompt for the agent; ``y``/``n`` (or ``/allow``, ``/deny [reason]``) answer
  the open permission question; ``/older`` pages back; ``/reconnect``; ``/detach`` (or Ctrl-D)
  leaves. Esc or Ctrl-C interrupts a running turn; Ctrl-C on an idle, empty line twice detaches.
* Viewer: the same screen, but typed text is refused, Esc does nothing and Ctrl-C detaches.
* Without a terminal on stdin (a script), a viewer just prints until the stream ends or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any, Final

from prompt_toolkit import PromptSession
from prompt_toolkit.formatted_text import HTML
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.patch_stdout import patch_stdout
from rich.console import Console
from rich.markup import escape

from tether.errors import TetherError
from tether.protocol.sdk_adapter import AssistantText, PermissionPrompt, SessionState, StreamText, TurnEnded
from tether.protocol.subscribe_policy import Stop
from tether.remote.manager import Connection, ReadOnly, RemoteSessionManager, ViewItem
from tether.remote.render import render

DOUBLE_PRESS_S: Final = 2.0
STREAM_TAIL_CHARS: Final = 400
HELP: Final = ("Type a prompt and press Enter. y / n (or /allow, /deny [reason]) answer a permission question. "
               "Esc or Ctrl-C stops a running turn. /older shows earlier events, /reconnect reopens the "
               "connection, /detach (or Ctrl-D) leaves; the session keeps running.")
_STATUS: Final = {"running": "running", "requires_action": "waiting for you", "idle": "idle",
                  "archived": "archived"}


class TerminalView:
    """Prints items above the input line; keeps what the bottom bar shows."""

    def __init__(self, console: Console, title: str, status: str) -> None:
        self.console = console
        self.title = title
        self.status = status
        self.connection = "connecting…"
        self.stream_tail = ""
        self.pending: PermissionPrompt | None = None
        self.invalidate: Callable[[], None] = lambda: None

    def show(self, item: ViewItem) -> None:
        if isinstance(item, StreamText):
            self.stream_tail = (self.stream_tail + item.text)[-STREAM_TAIL_CHARS:]
        elif isinstance(item, AssistantText | TurnEnded):
            self.stream_tail = ""
        if isinstance(item, SessionState):
            self.status = item.status or self.status
            self.title = item.title if item.title is not None else self.title
        elif isinstance(item, TurnEnded):
            self.status = "idle"
        elif isinstance(item, Connection):
            self.connection = {"connected": "live", "reconnecting": "reconnecting…", "ended": "disconnected"}.get(
                item.state, item.state)
        renderable = render(item)
        if renderable is not None:
            self.console.print(renderable)
        self.invalidate()

    def toolbar(self, manager: RemoteSessionManager) -> HTML:
        state = _STATUS.get(self.status, self.status)
        if self.status == "running" and not manager.viewer:
            state += " (Esc to stop)"
        mode = " · watching only" if manager.viewer else ""
        line = f" <b>{_html(self.title or manager.session_id)}</b> · {_html(state)} · {_html(self.connection)}{mode}"
        question = manager.permissions.current()
        if question is not None:
            answer = "answer elsewhere" if manager.viewer else "y / n"
            line += f"\n <b>permission:</b> allow {_html(question.tool_name)}? ({answer})"
        elif self.stream_tail:
            tail = self.stream_tail.replace("\n", " ").strip()[-120:]
            line += f"\n ● {_html(tail)}"
        return HTML(line)


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class AttachApp:
    """The interactive loop around one :class:`RemoteSessionManager`."""

    def __init__(self, manager: RemoteSessionManager, view: TerminalView) -> None:
        self.manager = manager
        self.view = view
        self._last_ctrl_c = 0.0
        self._tasks: asyncio.TaskGroup | None = None

    # ---- key bindings -------------------------------------------------------------------------
    def key_bindings(self) -> KeyBindings:
        kb = KeyBindings()

        @kb.add("escape", eager=True)
        def _esc(event: KeyPressEvent) -> None:
            if not self.manager.viewer and self._turn_running():
                self._spawn(self._interrupt())

        @kb.add("c-c")
        def _ctrl_c(event: KeyPressEvent) -> None:
            buffer = event.app.current_buffer
            if self.manager.viewer:
                event.app.exit(result="/detach")
            elif self._turn_running():
                self._spawn(self._interrupt())
            elif buffer.text:
                buffer.reset()
            elif time.monotonic() - self._last_ctrl_c < DOUBLE_PRESS_S:
                event.app.exit(result="/detach")
            else:
                self._last_ctrl_c = time.monotonic()
                self.view.console.print("[dim](Press Ctrl-C again to detach, or type /detach.)[/]")

        @kb.add("c-d")
        def _ctrl_d(event: KeyPressEvent) -> None:
            if not event.app.current_buffer.text:
                event.app.exit(result="/detach")

        return kb

    def _turn_running(self) -> bool:
        return self.view.status in ("running", "requires_action")

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._tasks is not None
        self._tasks.create_task(coro)

    async def _interrupt(self) -> None:
        if await self.manager.interrupt():
            self.view.console.print("[yellow]Stop requested.[/]")
        else:
            self.view.console.print("[red]Not connected: the interrupt was not sent.[/]")

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> Stop:
        session: PromptSession[str] = PromptSession(key_bindings=self.key_bindings(),
                                                    bottom_toolbar=lambda: self.view.toolbar(self.manager),
                                                    refresh_interval=0.5, erase_when_done=True)
        self.view.invalidate = session.app.invalidate
        async with asyncio.TaskGroup() as tg:
            self._tasks = tg
            with patch_stdout(raw=True):
                follower = tg.create_task(self.manager.run())
                while not follower.done():
                    line = await self._read_line(session, follower)
                    if line is None:
                        break
                    if await self._handle(line.strip()):
                        await self.manager.detach()
                        break
                stop = await follower
        return stop

    async def _read_line(self, session: PromptSession[str], follower: asyncio.Task[Stop]) -> str | None:
        prompt = asyncio.ensure_future(session.prompt_async(self._prompt_text))
        await asyncio.wait({prompt, follower}, return_when=asyncio.FIRST_COMPLETED)
        if prompt.done():
            try:
                return prompt.result()
            except (EOFError, KeyboardInterrupt):
                return "/detach"
        if session.app.is_running:
            session.app.exit(result="")
        with contextlib.suppress(Exception):
            await prompt
        return None

    def _prompt_text(self) -> HTML:
        if self.manager.permissions.current() is not None and not self.manager.viewer:
            return HTML("<ansiyellow>allow? [y/n]</ansiyellow> ❯ ")
        return HTML("<ansicyan>❯</ansicyan> ")

    async def _handle(self, line: str) -> bool:
        """Act on one input line; True means detach."""
        if not line:
            return False
        command, _, rest = line.partition(" ")
        try:
            if command in ("/detach", "/quit", "/exit"):
                return True
            if command == "/help":
                self.view.console.print(f"[dim]{escape(HELP)}[/]")
            elif command == "/older":
                await self.manager.load_older()
            elif command == "/reconnect":
                self.manager.reconnect()
            elif command in ("/allow", "/deny") or (self.manager.permissions.current() is not None
                                                    and line.lower() in ("y", "yes", "n", "no")):
                await self._answer(command == "/allow" or line.lower() in ("y", "yes"), rest.strip() or None)
            else:
                await self.manager.send_prompt(line)
        except ReadOnly:
            self.view.console.print("[yellow]Watching only (--viewer): nothing is sent from here.[/]")
        except TetherError as exc:
            self.view.console.print(f"[red]error:[/] {escape(exc.message)}")
        return False

    async def _answer(self, allow: bool, reason: str | None) -> None:
        if self.manager.permissions.current() is None:
            self.view.console.print("[dim]No permission question is open.[/]")
            return
        if not await self.manager.answer(allow, message=reason):
            self.view.console.print("[red]Not connected: the answer was not sent; try again when live.[/]")


async def follow_without_terminal(manager: RemoteSessionManager) -> Stop:
    """A viewer fed to a pipe: print until the stream stops or SIGINT/SIGTERM detaches."""
    loop = asyncio.get_running_loop()
    asked = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, asked.set)
    try:
        async with asyncio.TaskGroup() as tg:
            follower = tg.create_task(manager.run())
            waiter = tg.create_task(asked.wait())
            await asyncio.wait({follower, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not follower.done():
                await manager.detach()
            waiter.cancel()
        return follower.result()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
