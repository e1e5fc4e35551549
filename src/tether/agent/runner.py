"""The agent loop: model request → tool calls (with permission) → model request … → result.

:class:`Conversation` owns the history, the model choice, the permission policy and
the tools. :meth:`Conversation.turn_body` is the interruptible part of a turn (it
runs as its own task; cancelling it is an interrupt and kills running tools);
:meth:`Conversation.finish` writes what the CLI writes at the end of a turn,
including after an interrupt. Every model backend goes through the same code here.
"""

from __future__ import annotations

import time
import traceback
import uuid as uuidlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from tether.agent import wire
from tether.agent.backends.base import ModelBackend, ModelError, ModelRequest, cost_usd, resolve_model
from tether.agent.broker import Answer, PermissionBroker, allow_as_configured, deny_as_configured
from tether.agent.options import AgentOptions, default_system_prompt
from tether.agent.permissions import CallTarget, PermissionPolicy
from tether.agent.stdio import OutputClosed
from tether.agent.stream import MessageAccumulator, StreamProtocolError
from tether.agent.tools import Tool, ToolContext, ToolOutput
from tether.agent.turn import Outcome, ToolCall, TurnState
from tether.protocol.messages import Message, PermissionDeny
from tether.protocol.runner_policy import bwrap_argv

Emit = Callable[[Message], Awaitable[None]]


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class TurnEnd:
    """How the interruptible part of a turn ended (it never raises, except when cancelled)."""

    kind: Literal["done", "aborted", "failed"]
    error: str | None = None
    status: int | None = None


def merge_roles(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The API wants alternating roles: merge neighbours with the same role."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        if out and out[-1]["role"] == msg["role"]:
            prev = out[-1]
            out[-1] = {"role": prev["role"], "content": _blocks(prev["content"]) + _blocks(msg["content"])}
        else:
            out.append(msg)
    return out


def _blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content) if isinstance(content, list) else []


class Conversation:
    def __init__(self, opts: AgentOptions, backend: ModelBackend, tools: Mapping[str, Tool],
                 policy: PermissionPolicy, broker: PermissionBroker, emit: Emit, session_id: str,
                 version: str, warn: Callable[[str], None]) -> None:
        self.opts = opts
        self.backend = backend
        self.tools = dict(tools)
        self.policy = policy
        self.broker = broker
        self.emit = emit
        self.session_id = session_id
        self.version = version
        self.warn = warn
        self.history: list[dict[str, Any]] = []
        self.model = resolve_model(opts.model, backend.default_model)
        self.system_prompt = opts.system_prompt if opts.system_prompt is not None else default_system_prompt(opts.cwd)
        if opts.append_system_prompt:
            self.system_prompt += "\n\n" + opts.append_system_prompt
        self.input_closed = False
        self.ctx = ToolContext(cwd=opts.cwd, wrap=sandbox_wrapper(opts.sandbox, opts.cwd) if opts.sandbox else None)
        self.state_events = opts.emit_session_state
        # per-turn timing (monotonic seconds / milliseconds)
        self._api_ms = 0
        self._ttft_ms: int | None = None
        self._request_ms: int | None = None
        self._turn_started = 0.0
        self._last_request_id: str | None = None

    # --- small emitters ------------------------------------------------------------------

    async def session_state(self, state: str) -> None:
        if self.state_events:
            await self.emit(wire.session_state_changed(session_id=self.session_id, uuid=new_uuid(), state=state))

    async def status(self, status: str | None, permission_mode: str | None = None) -> None:
        await self.emit(wire.status(session_id=self.session_id, uuid=new_uuid(), status=status,
                                    permission_mode=permission_mode))

    async def system_init(self) -> None:
        await self.emit(wire.system_init(
            session_id=self.session_id, uuid=new_uuid(), cwd=self.opts.cwd, tools=sorted(self.tools),
            model=self.model, permission_mode=self.policy.mode, version=self.version,
            api_key_source=self.backend.api_key_source, additional_directories=self.policy.book.directories))

    def set_model(self, name: str | None) -> str:
        self.model = resolve_model(name, self.backend.default_model)
        return self.model

    # --- a turn ----------------------------------------------------------------------------

    def start(self, prompt: Mapping[str, Any], content: Any = None) -> TurnState:
        """A turn for ``prompt``; ``content`` is what the model gets (the prompt's own content
        with its ``@path`` references read, :func:`tether.agent.mentions.expand_prompt`)."""
        self._api_ms = 0
        self._ttft_ms = None
        self._request_ms = None
        self._turn_started = time.monotonic()
        if content is None:
            message = prompt.get("message")
            content = message.get("content") if isinstance(message, Mapping) else ""
        return TurnState(prompt={"role": "user", "content": content})

    async def turn_body(self, state: TurnState) -> TurnEnd:
        try:
            while True:
                await self._request(state)
                calls = state.end_message(self.model)
                if not calls:
                    return TurnEnd("done")
                for call in calls:
                    if await self._run_call(state, call):
                        return TurnEnd("aborted")
        except ModelError as exc:
            return TurnEnd("failed", f"API Error: {exc.message}", exc.status)
        except StreamProtocolError as exc:
            return TurnEnd("failed", f"API Error: {exc}", None)
        except OutputClosed:
            raise  # the host is gone: the session ends, not just the turn
        except Exception as exc:  # a bug must end the turn, not the process
            self.warn(f"internal error in the turn: {exc!r}\n{traceback.format_exc(limit=8)}")
            return TurnEnd("failed", f"Internal error: {exc!r}", None)

    async def _request(self, state: TurnState) -> None:
        state.begin_request()
        if self.opts.include_partial_messages:
            await self.status("requesting")
        request = ModelRequest(
            model=self.model, system=self.system_prompt,
            messages=merge_roles(self.history + state.new_messages),
            tools=[t.spec() for t in self.tools.values()], max_tokens=self.opts.max_tokens,
        )
        started = time.monotonic()
        if self._request_ms is None:
            self._request_ms = int((started - self._turn_started) * 1000)
        stream = await self.backend.open(request)
        first = True
        try:
            async for event in stream.events():
                if event.get("type") == "ping":
                    continue
                ttft: int | None = None
                if first:
                    first = False
                    ttft = int((time.monotonic() - started) * 1000)
                    if self._ttft_ms is None:
                        self._ttft_ms = ttft
                done = state.on_event(event)
                acc = state.acc
                if done is not None and acc is not None:
                    await self.emit(self._assistant(acc, [done.block], stream.request_id))
                if self.opts.include_partial_messages:
                    await self.emit(wire.stream_event(
                        event, session_id=self.session_id, uuid=new_uuid(),
                        message_id=acc.message_id if acc else None, ttft_ms=ttft))
        finally:
            self._api_ms += int((time.monotonic() - started) * 1000)
            await stream.aclose()
            self._last_request_id = stream.request_id

    def _assistant(self, acc: MessageAccumulator, content: list[dict[str, Any]], request_id: str | None,
                   aborted: bool = False) -> Message:
        return wire.assistant(
            session_id=self.session_id, uuid=new_uuid(), timestamp=now_iso(),
            message_id=acc.message_id or f"msg_{new_uuid()}", model=acc.model or self.model, content=content,
            usage=acc.start_usage or {"input_tokens": 0, "output_tokens": 0}, request_id=request_id,
            aborted=aborted)

    # --- tool calls ----------------------------------------------------------------------------

    async def _result(self, state: TurnState, call: ToolCall, output: ToolOutput, meta: dict[str, Any]) -> None:
        block = wire.tool_result_block(call.id, output.content, output.is_error)
        state.record_result(call.id, block)
        structured = output.structured if output.structured is not None else (
            f"Error: {output.content}" if output.is_error else output.content)
        await self.emit(wire.user_tool_result(session_id=self.session_id, uuid=new_uuid(), timestamp=now_iso(),
                                              block=block, tool_use_result=structured, meta=meta))

    async def _run_call(self, state: TurnState, call: ToolCall) -> bool:
        """Run one call; True when the turn must stop (a deny with ``interrupt``)."""
        tool = self.tools.get(call.name)
        problem = None
        if call.invalid_input is not None:
            problem = "The tool input is not a valid JSON object."
        elif tool is None:
            problem = f"No such tool available: {call.name}"
        elif (invalid := tool.validate(call.input)) is not None:
            problem = f"InputValidationError: {invalid}"
        if problem is not None or tool is None:
            output = ToolOutput(f"<tool_use_error>{problem}</tool_use_error>", True, f"Error: {problem}")
            await self._result(state, call, output, {"id": call.id})
            return False
        tool_input = call.input
        target = tool.target(tool_input, self.opts.cwd)
        answer = self._configured_answer(tool, target)
        if answer is None:
            answer = await self._ask(state, call, tool, target)
        decision = answer.decision
        if isinstance(decision, PermissionDeny):
            state.record_denial(call.id)
            if decision.interrupt:
                state.mark(call.id, "rejected")
                return True
            meta = {"id": call.id, "non_execution_kind": "permission-rule",
                    "permission_decision": {"decision": "reject", "source": answer.source}}
            await self._result(state, call, ToolOutput(decision.message, True, f"Error: {decision.message}"), meta)
            return False
        tool_input = decision.effective_input(call.input)
        if decision.updated_permissions:
            await self.apply_updates(decision.updated_permissions)
        if (invalid := tool.validate(tool_input)) is not None:
            await self._result(state, call, ToolOutput.error(f"InputValidationError: {invalid}"), {"id": call.id})
            return False
        state.mark(call.id, "running")
        try:
            output = await tool.run(tool_input, self.ctx)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            output = ToolOutput.error(f"{call.name} failed: {exc}")
        meta = {"id": call.id, "permission_decision": {"decision": "accept", "source": answer.source}}
        await self._result(state, call, output, meta)
        return False

    def _configured_answer(self, tool: Tool, target: CallTarget) -> Answer | None:
        """The policy's answer, or None when the user must be asked."""
        check = self.policy.check(tool.name, tool.permission_class, target)
        if check.verdict == "allow":
            return allow_as_configured()
        if check.verdict == "deny":
            return deny_as_configured(check.reason)
        return None

    async def _ask(self, state: TurnState, call: ToolCall, tool: Tool, target: CallTarget) -> Answer:
        cwd = self.opts.cwd
        check = self.policy.check(tool.name, tool.permission_class, target)
        if not self.opts.prompt_tool:
            message = (f"{tool.activity(call.input, cwd)} needs approval: {check.reason}, and no permission "
                       "prompt tool is configured (--permission-prompt-tool stdio).")
            await self.emit(wire.permission_denied(session_id=self.session_id, uuid=new_uuid(),
                                                   tool_name=call.name, tool_use_id=call.id, message=message))
            return Answer(PermissionDeny(message), "config")
        if self.input_closed:
            return Answer(PermissionDeny("Permission could not be asked: the input is closed."), "config")
        request_id = new_uuid()
        request = wire.can_use_tool(
            request_id=request_id, tool_name=call.name, tool_input=call.input, tool_use_id=call.id,
            description=tool.permission_description(call.input, cwd),
            suggestions=self.policy.suggestions(tool.name, tool.permission_class, target,
                                                tool.rule_content(call.input, cwd)),
            title=tool.activity(call.input, cwd), decision_reason=check.reason,
            blocked_path=target.path if tool.permission_class != "execute" else None)
        state.mark(call.id, "awaiting_permission")
        await self.session_state("requires_action")
        answer = await self.broker.ask(request_id, request, lambda: self._configured_answer(tool, target))
        await self.session_state("running")
        return answer

    async def apply_updates(self, updates: list[dict[str, Any]]) -> None:
        before = self.policy.mode
        self.policy.apply_updates(updates)
        if self.policy.mode != before:
            await self.status(None, self.policy.mode)

    # --- the end of a turn -----------------------------------------------------------------------

    async def finish(self, state: TurnState, end: TurnEnd | None) -> Outcome:
        """Write the closing lines of a turn; ``end`` None means the turn task was cancelled (interrupt)."""
        if end is None or end.kind == "aborted":
            acc = state.acc
            plan, outcome = state.abort()
            if plan.partial_content and acc is not None:
                await self.emit(self._assistant(acc, plan.partial_content, self._last_request_id,
                                                aborted=True))
            for aborted in plan.tool_results:
                await self.emit(wire.user_tool_result(
                    session_id=self.session_id, uuid=new_uuid(), timestamp=now_iso(), block=aborted.block,
                    tool_use_result=aborted.tool_use_result, meta=aborted.meta))
            await self.emit(wire.user_text(session_id=self.session_id, uuid=new_uuid(), timestamp=now_iso(),
                                           text=plan.marker))
            if self.opts.include_partial_messages and acc is not None:
                for event in plan.closing_events:
                    await self.emit(wire.stream_event(event, session_id=self.session_id, uuid=new_uuid(),
                                                      message_id=acc.message_id))
        elif end.kind == "failed":
            outcome = state.failure(end.error or "error", end.status)
        else:
            outcome = state.success()
        self.history.extend(state.new_messages)
        await self.emit(self._result_message(state, outcome))
        return outcome

    def _result_message(self, state: TurnState, outcome: Outcome) -> Message:
        u = state.usage
        cost = 0.0
        model_usage: dict[str, Any] = {}
        for model, mu in state.usage_by_model.items():
            c = cost_usd(model, mu.input_tokens, mu.output_tokens, mu.cache_read, mu.cache_creation)
            cost += c
            model_usage.update(wire.model_usage(model, mu.input_tokens, mu.output_tokens, mu.cache_read,
                                                mu.cache_creation, c))
        return wire.result(
            session_id=self.session_id, uuid=new_uuid(), subtype=outcome.subtype, is_error=outcome.is_error,
            duration_ms=int((time.monotonic() - self._turn_started) * 1000), duration_api_ms=self._api_ms,
            num_turns=outcome.num_turns, stop_reason=outcome.stop_reason, total_cost_usd=cost,
            usage=wire.usage_block(u.input_tokens, u.output_tokens, u.cache_read, u.cache_creation),
            model_usage_map=model_usage, permission_denials=state.denials,
            terminal_reason=outcome.terminal_reason, result_text=outcome.result_text, errors=outcome.errors,
            api_error_status=outcome.api_error_status, ttft_ms=self._ttft_ms,
            time_to_request_ms=self._request_ms)



def sandbox_wrapper(bwrap: str, cwd: str) -> Callable[[list[str]], list[str]]:
    """Bash under bubblewrap: everything read-only but ``cwd`` and a private /tmp (docs/protocol.md §11.9)."""
    def wrap(argv: list[str]) -> list[str]:
        return bwrap_argv(bwrap, argv, writable=[cwd], cwd=cwd, private_tmp=True)

    wrap(["true"])  # a working directory the sandbox cannot use ('/') fails here, at start
    return wrap
