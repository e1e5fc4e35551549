"""``tether agent``'s stdio session: read stdin, run turns, answer control requests.

Three tasks in one task group, each with one job:

* **reader** — parses stdin lines, queues user prompts (dedup by ``uuid``), answers
  control requests at once (an ``interrupt`` must not wait behind a turn) and routes
  permission answers. A bad line (invalid JSON, not an object, over the size limit)
  stops the input: the reason goes to stderr and the exit code
  is 1, but everything read before it is still processed, so no prompt that was
  acknowledged (echoed with ``isReplay``) is lost.
* **runner** — takes prompts one by one and runs each turn as a child task (so an
  interrupt can cancel it, which kills running tools), then writes its ``result``.
* **writer** — the only writer of stdout (:class:`tether.agent.stdio.Output`).

Shutdown order: the input ends (EOF, a bad line, ``end_session`` or a signal) → open
permission requests are withdrawn → the runner finishes the queued prompts (or drops
them after ``end_session``/a signal) → the writer drains → exit.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

from tether.agent import wire
from tether.agent.backends.base import ModelBackend, ModelError, model_choices
from tether.agent.broker import PermissionBroker
from tether.agent.mentions import expand_prompt
from tether.agent.options import AgentOptions
from tether.agent.permissions import PermissionPolicy
from tether.agent.runner import Conversation, TurnEnd, new_uuid, now_iso
from tether.agent.stdio import Framed, Output, Oversize, stderr_line
from tether.agent.titling import generate_title
from tether.agent.tools import Tool
from tether.agent.turn import TurnState
from tether.protocol.messages import (
    CONTROL_CANCEL_REQUEST,
    CONTROL_REQUEST,
    CONTROL_RESPONSE,
    GENERATE_SESSION_TITLE,
    KEEP_ALIVE,
    KNOWN_MESSAGE_TYPES,
    PERMISSION_MODES,
    UPDATE_ENVIRONMENT_VARIABLES,
    USER,
    Message,
    MessageError,
    control_error,
    control_success,
    parse_line,
    request_id_of,
    request_payload,
)
from tether.protocol.permission_rules import RuleBook, RuleError, parse_rule_string
from tether.protocol.uuid_ring import BoundedUUIDSet

EXIT_OK: Final = 0
EXIT_ERROR: Final = 1


class InputError(Exception):
    """stdin broke the protocol; the message says how (no traceback is ever shown for it)."""


class _Prompt:
    __slots__ = ("message", "uuid")

    def __init__(self, message: Message, uuid: str) -> None:
        self.message = message
        self.uuid = uuid


def build_policy(opts: AgentOptions) -> PermissionPolicy:
    book = RuleBook(mode=opts.permission_mode)
    try:
        book.add_rules("allow", [parse_rule_string(r) for r in opts.allowed_tools])
        book.add_rules("deny", [parse_rule_string(r) for r in opts.disallowed_tools])
    except RuleError as exc:
        raise ValueError(str(exc)) from None
    return PermissionPolicy(book, opts.cwd)


class AgentSession:
    def __init__(self, opts: AgentOptions, backend: ModelBackend, tools: Mapping[str, Tool], output: Output,
                 version: str) -> None:
        self.opts = opts
        self.out = output
        self.session_id = opts.session_id or new_uuid()
        self.broker = PermissionBroker(self.out.send, self._warn)
        self.conv = Conversation(opts, backend, tools, build_policy(opts), self.broker, self.out.send,
                                 self.session_id, version, self._warn)
        self.backend = backend
        self.version = version
        self._prompts: asyncio.Queue[_Prompt | None] = asyncio.Queue(opts.max_queued_prompts + 1)
        self._seen = BoundedUUIDSet()
        self._queued: set[str] = set()
        self._turn_task: asyncio.Task[TurnEnd] | None = None
        self._initialized = False
        self._ending = False
        self._fatal: str | None = None
        self._exit_code: int | None = None
        self._last_error = False
        self._prompts_ended = False
        self._reader_task: asyncio.Task[None] | None = None
        self._warm_task: asyncio.Task[None] | None = None
        self._starting = False
        self._interrupt_next = False
        self._tasks: asyncio.TaskGroup | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def run(self, frames: AsyncIterator[Framed]) -> int:
        """Run until the input ends and every accepted prompt is done; returns the exit code."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self.out.run(), name="writer")
                self._warm_task = tg.create_task(self._warm_up(), name="warm-up")
                tg.create_task(self._read_loop(frames), name="reader")
                tg.create_task(self._run_loop(), name="runner")
        finally:
            await self.backend.aclose()
        if self._exit_code is not None:
            return self._exit_code
        if self._fatal is not None:
            return EXIT_ERROR
        return EXIT_ERROR if self._last_error else EXIT_OK

    async def _warm_up(self) -> None:
        try:
            await self.backend.warm_up()
        except Exception as exc:  # the first request will report it properly
            self._warn(f"model backend warm-up failed: {exc!r}")

    def stop(self, exit_code: int) -> None:
        """A signal: end like ``end_session`` (interrupt the turn, drop queued prompts)."""
        if self._exit_code is None:
            self._exit_code = exit_code
        self._ending = True
        self._drop_queued()
        if self._turn_task is not None and not self._turn_task.done():
            self._turn_task.cancel()
        self.conv.input_closed = True
        self._end_prompts()
        task = self._reader_task
        if task is not None and not task.done():
            task.cancel()

    def _warn(self, text: str) -> None:
        stderr_line(f"warning: {text}")

    async def _emit(self, message: Message) -> None:
        await self.out.send(message)

    # --- reader ---------------------------------------------------------------------------------

    async def _read_loop(self, frames: AsyncIterator[Framed]) -> None:
        self._reader_task = asyncio.current_task()
        try:
            async for frame in frames:
                if await self._handle_frame(frame):
                    break
        except InputError as exc:
            self._fatal = str(exc)
            stderr_line(f"error: {exc}")
        except asyncio.CancelledError:
            if self._ending:  # stop(): a signal ends the input on purpose
                await self._close_input()
                return
            raise
        except OSError as exc:
            self._fatal = f"cannot read stdin: {exc}"
            stderr_line(f"error: {self._fatal}")
        await self._close_input()

    async def _close_input(self) -> None:
        self.conv.input_closed = True
        await self.broker.deny_all("The input closed before the permission request was answered.")
        self._end_prompts()

    def _end_prompts(self) -> None:
        """Queue the end marker once (the queue keeps one slot free for it)."""
        if not self._prompts_ended:
            self._prompts_ended = True
            self._prompts.put_nowait(None)

    async def _handle_frame(self, frame: Framed) -> bool:
        if isinstance(frame, Oversize):
            raise InputError(f"stdin line {frame.number} is longer than the {frame.limit}-byte limit")
        if not frame.data.strip():
            return False
        try:
            message = parse_line(frame.data, self.opts.max_line_bytes)
        except MessageError as exc:
            raise InputError(f"stdin line {frame.number}: {exc}") from None
        return await self._dispatch(message, frame.number)

    async def _dispatch(self, message: Message, number: int) -> bool:
        """Handle one inbound message; True when the input must stop (``end_session``)."""
        kind = message["type"]
        if kind == KEEP_ALIVE:
            return False
        if kind == USER:
            await self._on_user(message, number)
            return False
        if kind == CONTROL_REQUEST:
            return await self._on_control_request(message, number)
        if kind == CONTROL_RESPONSE:
            if self.opts.replay_user_messages:
                await self._emit(message)  # the CLI echoes control responses too
            self.broker.answer(message)
            return False
        if kind == UPDATE_ENVIRONMENT_VARIABLES:
            self._update_environment(message, number)
            return False
        if kind == CONTROL_CANCEL_REQUEST:
            return False  # we never wait on requests of the host
        if kind in KNOWN_MESSAGE_TYPES:
            self._warn(f"stdin line {number}: ignoring a {kind!r} message (not an input message)")
            return False
        # Like the stock CLI (docs/protocol.md §14.5): a well-formed line of a type this version
        # does not know is skipped, so a newer host can talk to an older agent.
        self._warn(f"stdin line {number}: ignoring a message of unknown type {kind!r}")
        return False

    def _update_environment(self, message: Message, number: int) -> None:
        variables = message.get("variables")
        if not isinstance(variables, dict) or not all(
                isinstance(k, str) and k and "=" not in k and isinstance(v, str) for k, v in variables.items()):
            raise InputError(f"stdin line {number}: update_environment_variables needs 'variables': "
                             "an object of string names to string values")
        os.environ.update(variables)

    async def _on_user(self, message: Message, number: int) -> None:
        inner = message.get("message")
        if not isinstance(inner, dict) or inner.get("role", "user") != "user":
            raise InputError(f"stdin line {number}: a user message needs 'message' with role 'user'")
        content = inner.get("content")
        if not isinstance(content, str | list):
            raise InputError(f"stdin line {number}: a user message's content must be a string or a list")
        raw_uuid = message.get("uuid")
        if raw_uuid is not None and (not isinstance(raw_uuid, str) or not raw_uuid):
            raise InputError(f"stdin line {number}: 'uuid' must be a non-empty string")
        if raw_uuid is not None:
            if raw_uuid in self._seen:
                # Seen before: acknowledge again, unless it is still queued (its echo comes when it starts).
                if self.opts.replay_user_messages and raw_uuid not in self._queued:
                    await self._emit(self._replay(message, raw_uuid))
                return
            self._seen.add(raw_uuid)
        uid = raw_uuid or new_uuid()
        if self._ending:
            return
        if self._prompts.qsize() >= self.opts.max_queued_prompts:
            raise InputError(f"stdin line {number}: more than {self.opts.max_queued_prompts} user messages "
                             "are waiting; the host must wait for results")
        self._queued.add(uid)
        self._prompts.put_nowait(_Prompt(message, uid))

    def _replay(self, message: Message, uid: str) -> Message:
        return wire.replay(message, session_id=self.session_id, uuid=uid, timestamp=now_iso())

    # --- control requests ----------------------------------------------------------------------

    async def _on_control_request(self, message: Message, number: int) -> bool:
        rid = request_id_of(message)
        if rid is None:
            raise InputError(f"stdin line {number}: control_request has no request_id")
        req = request_payload(message) or {}
        subtype = req.get("subtype")
        if subtype == "initialize":
            await self._initialize(rid, req)
        elif subtype == "interrupt":
            await self._interrupt(rid)
        elif subtype == "set_permission_mode":
            await self._set_permission_mode(rid, req.get("mode"))
        elif subtype == "set_model":
            model = req.get("model")
            if model is not None and not isinstance(model, str):
                await self._emit(control_error(rid, "set_model: 'model' must be a string"))
            else:
                await self._emit(control_success(rid, {"model": self.conv.set_model(model)}))
        elif subtype == "set_max_thinking_tokens":
            await self._emit(control_success(rid))
        elif subtype == "mcp_status":
            await self._emit(control_success(rid, {"mcpServers": []}))
        elif subtype == GENERATE_SESSION_TITLE and self._tasks is not None:
            description = req.get("description")
            self._tasks.create_task(self._title(rid, description if isinstance(description, str) else ""),
                                    name="title")
        elif subtype == "end_session":
            await self._emit(control_success(rid))
            await self._end_session()
            return True
        else:
            await self._emit(control_error(rid, f"Unsupported control request subtype: {subtype}",
                                           error_code="unsupported_request"))
        return False

    async def _initialize(self, rid: str, req: Mapping[str, Any]) -> None:
        pending = self.broker.pending_requests
        if self._initialized:
            await self._emit(control_error(rid, "Already initialized", pending_permission_requests=pending))
            return
        self._initialized = True
        system_prompt = req.get("systemPrompt")
        if isinstance(system_prompt, str):
            self.conv.system_prompt = system_prompt
        append = req.get("appendSystemPrompt")
        if isinstance(append, str) and append:
            self.conv.system_prompt += "\n\n" + append
        body = wire.initialize_response(
            pid=os.getpid(), model=self.conv.model, models=model_choices(self.backend.default_model),
            api_key_source=self.backend.api_key_source, permission_mode=self.conv.policy.mode,
            version=self.version)
        reply = control_success(rid, body)
        reply["response"]["pending_permission_requests"] = pending
        await self._emit(reply)

    async def _title(self, rid: str, description: str) -> None:
        """Answered off the reader (a model request takes a while); never blocks a turn."""
        try:
            title = await generate_title(self.backend, description)
        except ModelError as exc:
            await self._emit(control_error(rid, f"generate_session_title: {exc.message}"))
        except Exception as exc:  # the answer must come whatever happens
            await self._emit(control_error(rid, f"generate_session_title failed: {exc!r}"))
        else:
            await self._emit(control_success(rid, {"title": title}))

    async def _interrupt(self, rid: str) -> None:
        turn = self._turn_task
        running = turn is not None and not turn.done()
        if running:
            await self.broker.cancel_all()
        elif self._starting:
            self._interrupt_next = True  # the turn is being set up: cancel it as soon as it exists
        await self._emit(control_success(rid, {"still_queued": sorted(self._queued)}))
        if running and turn is not None:
            turn.cancel()

    async def _set_permission_mode(self, rid: str, mode: object) -> None:
        if not isinstance(mode, str) or mode not in PERMISSION_MODES:
            await self._emit(control_error(
                rid, f"Invalid permission mode {mode!r}; expected one of {', '.join(sorted(PERMISSION_MODES))}"))
            return
        self.conv.policy.set_mode(mode)
        await self._emit(control_success(rid, {"mode": mode}))
        await self.conv.status(None, mode)
        await self.broker.recheck_all()

    async def _end_session(self) -> None:
        if self._exit_code is None:
            self._exit_code = EXIT_OK
        self._ending = True
        self._drop_queued()
        turn = self._turn_task
        if turn is not None and not turn.done():
            await self.broker.cancel_all()
            turn.cancel()

    def _drop_queued(self) -> None:
        while True:
            try:
                item = self._prompts.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is not None:
                self._queued.discard(item.uuid)
            else:
                self._prompts_ended = False
                self._end_prompts()
                break

    # --- runner --------------------------------------------------------------------------------

    async def _run_loop(self) -> None:
        try:
            async with asyncio.TaskGroup() as turns:
                while (prompt := await self._prompts.get()) is not None:
                    self._queued.discard(prompt.uuid)
                    if self._ending:
                        continue
                    await self._run_turn(turns, prompt)
        finally:
            if self._warm_task is not None:
                self._warm_task.cancel()  # nothing left to warm up for
            await self.out.close()

    async def _run_turn(self, turns: asyncio.TaskGroup, prompt: _Prompt) -> None:
        conv = self.conv
        self._starting, self._interrupt_next = True, False
        try:
            message = prompt.message.get("message")
            content = await expand_prompt(message.get("content") if isinstance(message, dict) else "", self.opts.cwd)
            state: TurnState = conv.start(prompt.message, content)
            await conv.session_state("running")
            await conv.system_init()
            if self.opts.replay_user_messages:
                await self._emit(self._replay(prompt.message, prompt.uuid))
        finally:
            self._starting = False
        task = turns.create_task(conv.turn_body(state), name="turn")
        self._turn_task = task
        if self._interrupt_next or self._ending:
            task.cancel()
        try:
            await asyncio.wait({task})
        finally:
            self._turn_task = None
        end = None if task.cancelled() else task.result()
        outcome = await conv.finish(state, end)
        self._last_error = outcome.is_error
        await conv.session_state("idle")
