"""The state of one turn (one user prompt until its ``result``). Pure.

A turn alternates between a model request (``requesting`` → ``streaming``) and the
tool calls the model asked for (``tools``) until the model stops asking. It can end
in three ways:

* **success** — the model answered without tool calls;
* **abort** — an interrupt, or a deny with ``interrupt: true``: :meth:`TurnState.abort`
  says what the CLI prints then (the partial assistant text, a tool_result for every
  call that has none yet, the interrupt marker) and what goes into the history so
  the next request is well-formed (every ``tool_use`` answered by a ``tool_result``);
* **failure** — the model request failed.

The adapter (``tether.agent.session``) does the I/O and feeds this class; ids,
clocks and costs are passed in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tether.agent import wire
from tether.agent.stream import CompletedBlock, MessageAccumulator

Phase = Literal["idle", "requesting", "streaming", "tools", "done"]
CallStatus = Literal["pending", "awaiting_permission", "running", "done", "rejected"]
TerminalReason = Literal["completed", "aborted_streaming", "aborted_tools", "api_error"]


class TurnStateError(RuntimeError):
    """A method was called in a phase where it makes no sense (a bug in the adapter)."""


@dataclass
class ToolCall:
    id: str
    name: str
    input: dict[str, Any]
    invalid_input: str | None = None
    status: CallStatus = "pending"


@dataclass(frozen=True)
class AbortedResult:
    call: ToolCall
    block: dict[str, Any]
    tool_use_result: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class AbortPlan:
    partial_content: list[dict[str, Any]]
    """Text streamed before the abort (empty when none): one ``assistant`` line with ``aborted: true``."""
    tool_results: list[AbortedResult]
    marker: str
    terminal_reason: TerminalReason
    stop_reason: str | None
    closing_events: list[dict[str, Any]]
    """Stream events closing the abandoned message (with ``--include-partial-messages``)."""


@dataclass(frozen=True)
class Outcome:
    subtype: Literal["success", "error_during_execution"]
    terminal_reason: TerminalReason
    stop_reason: str | None
    result_text: str | None
    num_turns: int
    errors: tuple[str, ...] = ()
    api_error_status: int | None = None

    @property
    def is_error(self) -> bool:
        return self.subtype != "success"


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read: int = 0
    cache_creation: int = 0

    def add(self, usage: Mapping[str, Any]) -> None:
        self.input_tokens += _int(usage.get("input_tokens"))
        self.output_tokens += _int(usage.get("output_tokens"))
        self.cache_read += _int(usage.get("cache_read_input_tokens"))
        self.cache_creation += _int(usage.get("cache_creation_input_tokens"))


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass
class TurnState:
    prompt: dict[str, Any]
    """The API user message that opens the turn."""
    phase: Phase = "idle"
    requests: int = 0
    new_messages: list[dict[str, Any]] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    denials: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    usage_by_model: dict[str, Usage] = field(default_factory=dict)
    last_text: str = ""
    stop_reason: str | None = None
    acc: MessageAccumulator | None = None
    _results: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.new_messages.append(self.prompt)

    # --- model requests -----------------------------------------------------------

    def begin_request(self) -> None:
        if self.phase not in ("idle", "tools"):
            raise TurnStateError(f"cannot start a request in phase {self.phase}")
        if self.phase == "tools":
            self._close_tool_results()
        self.phase = "requesting"
        self.requests += 1
        self.acc = MessageAccumulator()

    def on_event(self, event: dict[str, Any]) -> CompletedBlock | None:
        if self.phase not in ("requesting", "streaming") or self.acc is None:
            raise TurnStateError(f"stream event in phase {self.phase}")
        self.phase = "streaming"
        return self.acc.feed(event)

    def end_message(self, model: str) -> list[ToolCall]:
        """The message is complete; record it and return the tool calls it asks for."""
        acc = self._require_acc()
        content = acc.content()
        self.stop_reason = acc.stop_reason
        self._account(model, acc.usage)
        if content:
            self.new_messages.append({"role": "assistant", "content": content})
        texts = [b.get("text", "") for b in content if b.get("type") == "text"]
        if texts:
            self.last_text = "".join(str(t) for t in texts)
        self.calls = [
            ToolCall(str(c.block.get("id")), str(c.block.get("name")), dict(c.block.get("input") or {}),
                     c.invalid_input)
            for c in sorted(acc.completed, key=lambda c: c.index) if c.block.get("type") == "tool_use"
        ]
        self._results = []
        self.acc = None
        self.phase = "tools" if self.calls else "done"
        return list(self.calls)

    def _account(self, model: str, usage: Mapping[str, Any]) -> None:
        self.usage.add(usage)
        self.usage_by_model.setdefault(model, Usage()).add(usage)

    def _require_acc(self) -> MessageAccumulator:
        if self.acc is None or self.phase not in ("requesting", "streaming"):
            raise TurnStateError(f"no message in progress (phase {self.phase})")
        return self.acc

    # --- tool calls -----------------------------------------------------------------

    def call(self, call_id: str) -> ToolCall:
        for c in self.calls:
            if c.id == call_id:
                return c
        raise TurnStateError(f"unknown tool call {call_id}")

    def mark(self, call_id: str, status: CallStatus) -> None:
        if self.phase != "tools":
            raise TurnStateError(f"cannot mark a tool call in phase {self.phase}")
        self.call(call_id).status = status

    def record_result(self, call_id: str, block: dict[str, Any]) -> None:
        call = self.call(call_id)
        if call.status not in ("done", "rejected"):
            call.status = "done"
        self._results.append(block)

    def record_denial(self, call_id: str) -> None:
        call = self.call(call_id)
        if not any(d["tool_use_id"] == call.id for d in self.denials):
            self.denials.append({"tool_name": call.name, "tool_use_id": call.id, "tool_input": dict(call.input)})

    def _close_tool_results(self) -> None:
        if self._results:
            self.new_messages.append({"role": "user", "content": list(self._results)})
        self._results = []

    # --- endings -----------------------------------------------------------------------

    def success(self) -> Outcome:
        if self.phase != "done":
            raise TurnStateError(f"turn cannot succeed in phase {self.phase}")
        return Outcome("success", "completed", self.stop_reason, self.last_text, self.requests)

    def failure(self, error: str, status: int | None) -> Outcome:
        """The model request failed: the partial message is dropped; the prompt stays in the history."""
        self.acc = None
        if self.phase == "tools":
            self._answer_open_calls(wire.REJECTED_TEXT)
            self._close_tool_results()
        self.phase = "done"
        return Outcome("error_during_execution", "api_error", None, None, self.requests, (error,), status)

    def _answer_open_calls(self, text: str) -> list[ToolCall]:
        open_calls = [c for c in self.calls if c.status not in ("done",)
                      and not any(r.get("tool_use_id") == c.id for r in self._results)]
        for c in open_calls:
            self._results.append(wire.tool_result_block(c.id, text, True))
            c.status = "rejected"
        return open_calls

    def abort(self) -> tuple[AbortPlan, Outcome]:
        """The turn was interrupted; returns what to print and the outcome."""
        if self.phase in ("requesting", "streaming", "idle"):
            plan = self._abort_streaming()
        elif self.phase == "tools":
            plan = self._abort_tools()
        else:
            raise TurnStateError("the turn is already over")
        self.phase = "done"
        errors = ("Interrupted by user",)
        outcome = Outcome("error_during_execution", plan.terminal_reason, plan.stop_reason, None,
                          self.requests + 1, errors)
        return plan, outcome

    def _abort_streaming(self) -> AbortPlan:
        acc = self.acc
        partial: list[dict[str, Any]] = []
        closing: list[dict[str, Any]] = []
        if acc is not None:
            partial = acc.partial_blocks()
            kept = [b for b in acc.content() if b.get("type") != "tool_use"] + partial
            if kept:
                self.new_messages.append({"role": "assistant", "content": kept})
            if acc.started and not acc.stopped:
                closing = [{"type": "content_block_stop", "index": i} for i in acc.open_indices]
                closing.append({"type": "message_delta", "delta": {"stop_reason": None, "stop_sequence": None},
                                "usage": {"output_tokens": _int(acc.usage.get("output_tokens"))}})
                closing.append({"type": "message_stop"})
        self.acc = None
        self.new_messages.append({"role": "user", "content": [{"type": "text", "text": wire.INTERRUPTED}]})
        return AbortPlan(partial, [], wire.INTERRUPTED, "aborted_streaming", None, closing)

    def _abort_tools(self) -> AbortPlan:
        aborted: list[AbortedResult] = []
        answered = {r.get("tool_use_id") for r in self._results}
        for c in self.calls:
            if c.id in answered:
                continue
            if c.status == "running":
                text = wire.STOPPED_WHILE_RUNNING_TEXT
            else:
                text = wire.REJECTED_TEXT
                if c.status in ("awaiting_permission", "rejected"):
                    self.record_denial(c.id)
            block = wire.tool_result_block(c.id, text, True)
            block = {k: block[k] for k in ("type", "content", "is_error", "tool_use_id")}
            self._results.append(block)
            c.status = "rejected"
            aborted.append(AbortedResult(c, block, wire.USER_REJECTED,
                                         {"id": c.id, "non_execution_kind": "user-rejected"}))
        marker = {"type": "text", "text": wire.INTERRUPTED_FOR_TOOL}
        self.new_messages.append({"role": "user", "content": [*self._results, marker]})
        self._results = []
        return AbortPlan([], aborted, wire.INTERRUPTED_FOR_TOOL, "aborted_tools", "tool_use", [])
