"""``tether claude``: the real Claude Code TUI at the terminal, the same conversation from a phone
(docs/protocol.md §14.7).

:class:`ClaudeSession` is the second front end of the in-process REPL bridge core
(:class:`tether.bridge.repl.FrontEnd`; the first is Tether's own REPL). It runs the stock ``claude``
TUI on a pseudo-terminal (:mod:`~tether.claude.pty_runner`) and:

* **local**: follows the TUI's transcript (:mod:`~tether.claude.follower`) and mirrors each new
  record to the session as the matching SDK message (:func:`~tether.protocol.claude_transcript.map_record`),
  once, in conversation order, with a ``result`` at the end of every turn; while remote control is
  not connected yet the core's FlushGate holds them, and the transcript so far is its history;
* **hand-off**: a client's prompt (or "Take over") ends the TUI (after the turn running at the
  terminal), and a headless ``claude --resume <uuid> -p …`` takes the session under a session host
  (:mod:`~tether.claude.remote`): streaming, remote permission prompts, interrupts;
* **hand-back**: a key at the terminal (or "Return to terminal") waits for the running turn (Ctrl-C
  stops it), ends the headless run's input, and restarts the TUI with ``--resume <uuid>``.

Who drives is decided by :class:`~tether.protocol.claude_handoff.HandOff`; this class carries out
its actions and tells clients the state (``system/tether_terminal`` events).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pathlib
import signal
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from tether.bridge.agent_process import CREDENTIAL_ENV, AgentSpec
from tether.bridge.repl import BridgeInfo, RemoteControl
from tether.bridge.repl.core import ReplBridgeCore
from tether.bridge.session_host import SessionHost, SessionOutcome
from tether.claude import console
from tether.claude.args import ClaudeArgs
from tether.claude.follower import LineFollower, TranscriptReader
from tether.claude.mirror import TranscriptMirror
from tether.claude.pty_runner import PtyProcess, Terminal
from tether.claude.remote import CoreLink, own_request
from tether.protocol import claude_handoff as h
from tether.protocol import messages as m
from tether.protocol.bridge_state import BridgeStatus
from tether.protocol.claude_transcript import (
    interrupted_result,
    transcript_path,
)
from tether.protocol.repl_bridge import RETURN_TO_TERMINAL, TAKE_OVER

log = logging.getLogger("tether.claude")
TRANSCRIPT_LIMIT: Final = 10_000
CTRL_C: Final = b"\x03"
CTRL_Z: Final = b"\x1a"
ESC: Final = b"\x1b"
TERMINAL_EVENT: Final = "tether_terminal"


@dataclass(frozen=True)
class ClaudeSettings:
    claude: str
    """The ``claude`` executable."""
    args: ClaudeArgs
    cwd: pathlib.Path
    config_dir: pathlib.Path
    """Claude Code's configuration directory (``$CLAUDE_CONFIG_DIR``, else ``~/.claude``)."""
    settings_file: pathlib.Path
    hooks_file: pathlib.Path
    poll_s: float = 0.1
    bridge_wait_s: float = 15.0
    tui_term_grace_s: float = 10.0


def child_environment() -> dict[str, str]:
    """This process's environment without the variables that carry a session or Tether credential."""
    env = {k: v for k, v in os.environ.items() if k not in CREDENTIAL_ENV}
    env.setdefault("TERM", "xterm-256color")
    return env


class ClaudeSession(TranscriptMirror):
    def __init__(self, settings: ClaudeSettings, terminal: Terminal) -> None:
        self.settings = settings
        self.args = settings.args
        self.terminal = terminal
        self.rc: RemoteControl | None = None
        self.machine = h.HandOff()
        self.conversation: deque[dict[str, Any]] = deque(maxlen=TRANSCRIPT_LIMIT)
        self.session_uuid: str | None = settings.args.known_session
        self._first_session_id: str | None = None
        if self.session_uuid is None and not (self.args.resume_picker or self.args.continue_latest or self.args.fork):
            self.session_uuid = self._first_session_id = str(uuidlib.uuid4())
        self.reader = TranscriptReader(self._path_of(self.session_uuid))
        self.hooks = LineFollower(settings.hooks_file)
        self.poll_s = settings.poll_s
        self.tui: PtyProcess | None = None
        self.host: SessionHost | None = None
        self.link: CoreLink | None = None
        self.bridge: tuple[BridgeStatus | None, BridgeInfo | None] = (None, None)
        self._bridge_settled = asyncio.Event()
        self._published: h.TerminalStatus | None = None
        self._published_core: ReplBridgeCore | None = None
        self._done: asyncio.Future[int] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tui_started_at: float | None = None  # wall clock: transcript records carry wall-clock times

    # ---- paths -------------------------------------------------------------------------------------

    def _path_of(self, session_id: str | None) -> pathlib.Path | None:
        if session_id is None:
            return None
        return pathlib.Path(transcript_path(str(self.settings.config_dir), str(self.settings.cwd), session_id))

    @property
    def core(self) -> ReplBridgeCore | None:
        return self.rc.core if self.rc is not None else None

    # ---- life --------------------------------------------------------------------------------------

    async def run(self, *, name: str | None = None, mirror: bool = False) -> int:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        self._load_history()
        with self.terminal.raw():
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                        loop.add_signal_handler(sig, self._on_signal, sig)
                    if self.rc is not None:
                        self.rc.start(tg, name=name, mirror=mirror)
                        await self._announce_bridge()
                    self._spawn(self._run_tui(self.args.first_tui(self._first_session_id,
                                                                   str(self.settings.settings_file))), "tui")
                    poll = tg.create_task(self._poll_loop(), name="claude-poll")
                    code = await self._done
                    await self._shutdown()
                    poll.cancel()
            finally:
                for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                self._tg = None
        return code

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None] | None:
        if self._tg is None:
            coro.close()
            return None
        task = self._tg.create_task(self._guarded(coro, name), name=f"claude-{name}")
        self._tasks[name] = task
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        try:
            await coro
        except Exception as exc:
            log.exception("tether claude: the %s failed", name)
            self._finish(1, f"internal error in the {name}: {exc!r}")

    def _finish(self, code: int, why: str | None = None) -> None:
        if why:
            log.warning("ending: %s", why)
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    def _on_signal(self, sig: int) -> None:
        log.info("signal %s: ending", sig)
        self._finish(128 + sig)

    async def _shutdown(self) -> None:
        """In order: the TUI or the headless run ends, then remote control (its teardown)."""
        self.machine.shutdown()
        self.terminal.listen(None)
        tui, host = self.tui, self.host
        if tui is not None and tui.running:
            tui.terminate()
            if not await self._wait_task("tui", self.settings.tui_term_grace_s):
                tui.kill()
        if host is not None:
            host.stop()  # SIGTERM, then SIGKILL after the host's grace
        for name in ("tui", "headless run"):  # their tasks read the transcript to its end
            await self._wait_task(name, self.settings.tui_term_grace_s + 15.0)
        if self.rc is not None and self.rc.active:
            with contextlib.suppress(Exception):
                await self.rc.stop()

    async def _wait_task(self, name: str, timeout: float) -> bool:
        task = self._tasks.get(name)
        if task is None or task.done():
            return True
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)

    async def _announce_bridge(self) -> None:
        """Before the TUI draws: the session's address (or why there is none)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.bridge_wait_s):
                await self._bridge_settled.wait()
        status, info = self.bridge
        if status is not None and status.state == "failed":
            self.terminal.say(console.notice(f"Remote Control failed · {status.detail or 'unknown error'} · "
                                             "continuing at the terminal only"))
        elif info is not None and info.session_url:
            what = "Mirroring" if info.mirror else "Remote Control active"
            self.terminal.say(console.notice(f"{what} · {info.session_url}"))
        else:
            self.terminal.say(console.notice("Remote Control is starting…"))

    # ---- the TUI ------------------------------------------------------------------------------------

    async def _run_tui(self, argv: Sequence[str]) -> None:
        pty = PtyProcess([self.settings.claude, *argv], str(self.settings.cwd), child_environment(), self.terminal)
        self._tui_started_at = time.time()
        try:
            await pty.start()
        except OSError as exc:
            self.terminal.say(console.notice(f"cannot start {self.settings.claude}: {exc}"))
            self._apply(self.machine.tui_exited(127))
            return
        self.tui = pty
        self.terminal.listen(self._tui_keys)
        if self.machine.mode == "handing_off" and not self.machine.local_turn:
            pty.terminate()  # a client took the session over while the TUI was starting
        try:
            code = await pty.wait()
        finally:
            self.terminal.listen(None)
            self.tui = None
        self._drain(final=True)  # the TUI's last records (mirrored: it was still local)
        self._apply(self.machine.tui_exited(code if code >= 0 else 128 - code))

    def _tui_keys(self, data: bytes) -> None:
        """Keys for the TUI as typed; Ctrl-Z suspends it and ``tether claude`` together (the shell's
        job control), ``fg`` brings both back."""
        tui = self.tui
        if tui is None:
            return
        before, ctrl_z, after = data.partition(CTRL_Z)
        if before:
            tui.write(before)
        if ctrl_z:
            tui.pause()
            self.terminal.suspend()
            tui.resume()
            if after:
                self._tui_keys(after)

    def _restart_tui(self) -> None:
        self.terminal.say(console.notice("back at the terminal"))
        if self.session_uuid is not None:
            path = self._path_of(self.session_uuid)
            argv = self.args.tui_again(self.session_uuid, str(self.settings.settings_file),
                                       exists=path is not None and path.exists())
        else:
            argv = dataclasses.replace(self.args, prompt=None).first_tui(None, str(self.settings.settings_file))
        self._spawn(self._run_tui(argv), "tui")

    # ---- the headless run -----------------------------------------------------------------------------

    async def _run_host(self) -> None:
        uuid = self.session_uuid
        if uuid is None:
            self._apply(self.machine.host_exited(failed="the terminal's session is not known yet"))
            return
        path = self._path_of(uuid)
        command = [self.settings.claude, *self.args.headless(uuid, exists=path is not None and path.exists())]
        spec = AgentSpec(command=command, cwd=str(self.settings.cwd), include_partial_messages=True)
        link = CoreLink(lambda: self.core, self._on_remote_output)
        host = SessionHost(self._session_label(), link, spec)
        self.link, self.host = link, host
        self._show_remote_banner()
        assert self._tg is not None
        run = self._tg.create_task(host.run(), name="claude-host")
        started = self._tg.create_task(host.wait_started(60.0), name="claude-host-started")
        await asyncio.wait({run, started}, return_when=asyncio.FIRST_COMPLETED)
        if started.done() and started.result() and not run.done():
            self._apply(self.machine.host_started())
        else:
            started.cancel()
        outcome = await run
        self.link = self.host = None
        self._drain(final=True)  # its records were relayed from its output: not mirrored again
        self._host_ended(outcome)

    def _host_ended(self, outcome: SessionOutcome) -> None:
        asked = self.machine.input_ended or self.machine.mode == "ended"
        failed = None
        if not asked:
            failed = f"the headless claude stopped ({outcome.error or outcome.status})"
            self.terminal.say(console.notice(failed))
            if self.machine.remote_turn and self.core is not None:  # clients stop showing it as running
                self.core.relay({**interrupted_result("", str(uuidlib.uuid4())), "errors": [failed]})
        self._apply(self.machine.host_exited(failed=failed))

    def _session_label(self) -> str:
        info = self.bridge[1]
        return (info.session_id if info is not None else None) or self.session_uuid or "tether-claude"

    def _show_remote_banner(self) -> None:
        info = self.bridge[1]
        self.terminal.say(console.remote_banner(info.session_url if info is not None else None))
        self.terminal.flush_input()
        self.terminal.listen(self._on_key)

    def _on_remote_output(self, msg: dict[str, Any]) -> None:
        for line in console.output_lines(msg):
            self.terminal.say(line)
        self._apply(self.machine.agent_output(msg))

    def _on_key(self, data: bytes) -> None:
        """A key while the session is remote: take it back (Ctrl-C while waiting: stop the turn)."""
        if self.machine.mode == "handing_back":
            if CTRL_C in data:
                actions, _ = self.machine.return_to_terminal(interrupt=True)
                self.terminal.say(console.notice("stopping the remote turn…"))
                self._apply(actions)
            return
        actions, error = self.machine.return_to_terminal()
        if error is None:
            self.terminal.say(console.returning(self.machine.remote_turn and not self.machine.input_ended))
        self._apply(actions)

    # ---- actions ------------------------------------------------------------------------------------

    def _apply(self, actions: Sequence[h.Action]) -> None:
        for action in actions:
            if isinstance(action, h.EndTui):
                if self.tui is not None:
                    self.tui.terminate()
            elif isinstance(action, h.StartHost):
                self._spawn(self._run_host(), "headless run")
            elif isinstance(action, h.Deliver):
                self._deliver(action.message)
            elif isinstance(action, h.InterruptAgent):
                if self.link is not None:
                    self.link.deliver(own_request(m.INTERRUPT))
            elif isinstance(action, h.EndAgentInput):
                if self.host is not None:
                    self.host.end_input()
            elif isinstance(action, h.StartTui):
                self._restart_tui()
            elif isinstance(action, h.InterruptTui):
                if self.tui is not None:
                    self.tui.write(ESC)
            elif isinstance(action, h.Exit):
                self._finish(action.code)
            elif isinstance(action, h.Dropped):
                self._dropped(action)
        self._publish_status()

    def _deliver(self, message: dict[str, Any]) -> None:
        self.terminal.say(console.prompt_line(message))
        if self.link is None or not self.link.deliver(message):
            self._dropped(h.Dropped((message,), "the headless run is not taking prompts"))

    def _dropped(self, action: h.Dropped) -> None:
        log.warning("%d prompt(s) not run: %s", len(action.messages), action.reason)
        if self.tui is None:
            self.terminal.say(console.notice(f"{len(action.messages)} remote prompt(s) not run: {action.reason}"))
        if self.core is not None and action.messages:
            self.core.relay({**interrupted_result("", str(uuidlib.uuid4())), "errors": [action.reason]})

    def _publish_status(self) -> None:
        """Tell clients who drives the session, when that changed (or remote control restarted)."""
        core = self.core
        status = self.machine.status()
        if core is None or (status == self._published and core is self._published_core):
            return
        self._published, self._published_core = status, core
        core.relay({"type": m.SYSTEM, "subtype": TERMINAL_EVENT, "uuid": str(uuidlib.uuid4()), "session_id": "",
                    **status.to_json(), "can_take_over": not core.mirror})

    # ---- FrontEnd (what the bridge core calls) -----------------------------------------------------------

    def transcript(self) -> Sequence[dict[str, Any]]:
        return list(self.conversation)

    def deliver_prompt(self, message: dict[str, Any]) -> None:
        self._apply(self.machine.client_prompt(dict(message)))

    def permission_settled(self, request_id: str, decision: m.PermissionDecision) -> None:
        if self.link is not None:
            self.terminal.say(console.notice("answered on another device"))
            self.link.deliver(m.control_success(request_id, decision.to_json()))

    def interrupt(self) -> None:
        self._apply(self.machine.interrupt())

    def set_model(self, model: str | None) -> str | None:
        if self.link is None or self.machine.input_ended:
            return "The session is at the terminal: change the model there (or take over first)."
        self.link.deliver(own_request(m.SET_MODEL, model=model or "default"))
        return None

    def set_permission_mode(self, mode: str) -> str | None:
        if mode not in m.PERMISSION_MODES:
            return f"unknown permission mode {mode!r}"
        if self.link is None or self.machine.input_ended:
            return "The session is at the terminal: change the permission mode there (or take over first)."
        if mode == "bypassPermissions":
            return "Cannot switch to bypassPermissions remotely."
        self.link.deliver(own_request(m.SET_PERMISSION_MODE, mode=mode))
        return None

    def terminal_request(self, subtype: str, request: Mapping[str, Any]) -> str | None:
        if subtype == TAKE_OVER:
            actions, error = self.machine.take_over()
        elif subtype == RETURN_TO_TERMINAL:
            actions, error = self.machine.return_to_terminal(interrupt=request.get("interrupt") is True)
            if error is None and self.machine.mode == "handing_back":
                self.terminal.say(console.notice("returning to the terminal (asked on another device)"))
        else:
            return f"unknown terminal request {subtype!r}"
        self._apply(actions)
        return error

    def bridge_changed(self, status: BridgeStatus | None, info: BridgeInfo | None) -> None:
        self.bridge = (status, info if info is not None or status is None else self.bridge[1])
        if status is None or status.state in ("ready", "connected", "failed"):
            self._bridge_settled.set()
        if status is not None and status.state in ("ready", "connected"):
            self._publish_status()

    def bridge_notice(self, text: str) -> None:
        log.info("remote control: %s", text)
        if self.tui is None:
            self.terminal.say(console.notice(text))

    async def generate_title(self, prompts: Sequence[str]) -> str | None:
        return None  # the TUI's model is not reachable from here: the summary titles the session
