"""The REPL's agent: ``tether agent`` in this process, or a subprocess speaking stream-json (the
stock ``claude``, or any command), chosen like ``tether rc --agent`` (docs/protocol.md §5).

Both are driven through the session host's ``AgentHandle`` interface (the in-process
:class:`~tether.agent.inprocess.InProcessAgent`, the subprocess
:class:`~tether.bridge.agent_process.AgentProcess`). :class:`AgentLink` starts it, hands every
output message to the REPL, and matches the answers to the REPL's own control requests
(``interrupt``, ``set_model``, ``generate_session_title`` …) to their waiters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import uuid as uuidlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from tether.bridge.agent_process import AgentProcess, AgentSpec
from tether.bridge.session_host import AgentHandle
from tether.bridge.spawner import TETHER_AGENT, AgentChoice
from tether.protocol import messages as m
from tether.protocol.line_splitter import Oversize

log = logging.getLogger("tether.repl.agent")
MAX_LINE: Final = 64 << 20
TERM_GRACE: Final = 5.0

Message = dict[str, Any]


class AgentRequestFailed(Exception):
    """The agent answered a control request with an error (or not at all)."""


@dataclass(frozen=True)
class InProcessArgs:
    backend: str | None = None
    scenario: str | None = None
    model: str | None = None
    permission_mode: str | None = None


def in_process_args(choice: AgentChoice) -> InProcessArgs | None:
    """``tether agent [--backend B] [--scenario F] [--model M] [--permission-mode P]`` runs in this
    process; any other ``tether agent`` arguments (or another agent) need a subprocess: None."""
    if choice.kind != "tether" or tuple(choice.command[:len(TETHER_AGENT)]) != TETHER_AGENT:
        return None
    parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    for flag in ("--backend", "--scenario", "--model", "--permission-mode"):
        parser.add_argument(flag)
    try:
        ns, rest = parser.parse_known_args(list(choice.command[len(TETHER_AGENT):]))
    except (argparse.ArgumentError, SystemExit):
        return None
    if rest:
        return None
    return InProcessArgs(ns.backend, ns.scenario, ns.model, ns.permission_mode)


def make_agent(choice: AgentChoice, cwd: str, *, permission_mode: str | None, model: str | None) -> tuple[AgentHandle, str]:
    """The agent handle and a line describing it. Raises ``ValueError`` (with the reason) when the
    in-process agent cannot be set up (bad backend, unreadable scenario)."""
    args = in_process_args(choice)
    if args is None:
        spec = AgentSpec(command=choice.command, cwd=cwd, permission_mode=permission_mode, model=model)
        return AgentProcess(spec, max_line_bytes=MAX_LINE), choice.description
    from tether.agent.inprocess import InProcessAgent
    from tether.agent.main import VERSION, UsageError, choose_backend, make_backend
    from tether.agent.options import AgentOptions

    try:
        name, _ = choose_backend(args.backend, args.scenario)
        backend = make_backend(name, args.scenario, args.model or model)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    opts = AgentOptions(cwd=cwd, model=args.model or model, permission_mode=args.permission_mode or permission_mode
                        or "default", prompt_tool=True, replay_user_messages=True)
    what = "the offline scripted model" if name == "scripted" else "the Anthropic API"
    return InProcessAgent(opts, backend, VERSION), f"tether agent, in process ({what})"


class AgentLink:
    """One running agent (restartable for ``/clear``)."""

    def __init__(self, factory: Callable[[], AgentHandle], on_message: Callable[[Message], None]) -> None:
        self._factory = factory
        self._on_message = on_message
        self.handle: AgentHandle | None = None
        self._waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self.exited = asyncio.Event()
        self.exit_code: int | None = None
        self.restarts = 0

    @property
    def running(self) -> bool:
        return self.handle is not None and self.handle.returncode is None and not self.exited.is_set()

    async def start(self) -> None:
        """Start the agent (raises ``OSError`` when it cannot be started)."""
        handle = self._factory()
        await handle.start()
        self.handle = handle
        self.exited.clear()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(handle.write_loop(), name="agent-stdin"),
                       loop.create_task(handle.stderr_loop(), name="agent-stderr"),
                       loop.create_task(self._read(handle), name="agent-stdout")]

    async def _read(self, handle: AgentHandle) -> None:
        try:
            async for piece in handle.stdout_lines():
                if isinstance(piece, Oversize) or not piece.strip():
                    continue
                try:
                    msg = m.parse_line(piece, MAX_LINE)
                except m.MessageError as exc:
                    log.warning("bad output from the agent (%s): %.120r", exc, piece)
                    continue
                if self._answered(msg):
                    continue
                try:
                    self._on_message(msg)
                except Exception:
                    log.exception("showing an agent message failed")
        finally:
            self.exit_code = await handle.wait()
            for waiter in self._waiters.values():
                if not waiter.done():
                    waiter.set_exception(AgentRequestFailed("the agent exited"))
            self._waiters.clear()
            if handle is self.handle:
                self.exited.set()

    def _answered(self, msg: Mapping[str, Any]) -> bool:
        """An answer to one of our own control requests: for its waiter, not the conversation."""
        if not m.is_control_response(msg):
            return False
        waiter = self._waiters.pop(m.response_request_id(msg) or "", None)
        if waiter is None:
            return True  # e.g. the agent echoing a permission answer: nothing to show
        inner = m.response_payload(msg) or {}
        if inner.get("subtype") == "success":
            response = inner.get("response")
            waiter.set_result(response if isinstance(response, dict) else {})
        else:
            waiter.set_exception(AgentRequestFailed(str(inner.get("error") or "the agent refused")))
        return True

    async def send(self, message: Mapping[str, Any]) -> bool:
        handle = self.handle
        if handle is None or not self.running:
            return False
        return await handle.send(message)

    async def request(self, subtype: str, timeout: float = 30.0, **fields: Any) -> dict[str, Any]:
        """A control request to the agent; its success payload (raises :class:`AgentRequestFailed`)."""
        rid = f"repl-{uuidlib.uuid4()}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[rid] = waiter
        if not await self.send(m.control_request(subtype, rid, **fields)):
            self._waiters.pop(rid, None)
            raise AgentRequestFailed("the agent is not running")
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            raise AgentRequestFailed(f"the agent did not answer {subtype} within {timeout:g} s") from None
        finally:
            self._waiters.pop(rid, None)

    def interrupt(self) -> None:
        """Stop the current turn (the answer is not waited for)."""
        task = asyncio.get_running_loop().create_task(self._interrupt(), name="agent-interrupt")
        self._tasks.append(task)

    async def _interrupt(self) -> None:
        with contextlib.suppress(AgentRequestFailed):
            await self.request(m.INTERRUPT, timeout=10.0)

    async def stop(self) -> None:
        """End the agent: end of input, then SIGTERM, then SIGKILL."""
        await self._stop(self.handle)

    async def _stop(self, handle: AgentHandle | None) -> None:
        if handle is None:
            return
        if handle.returncode is None:
            handle.end_input()
            if await handle.wait(TERM_GRACE) is None:
                await handle.terminate(TERM_GRACE)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def restart(self) -> None:
        """A fresh agent (``/clear``): the old one ends (not reported as an exit), a new one starts."""
        old, self.handle = self.handle, None
        await self._stop(old)
        self.restarts += 1
        await self.start()
