"""Assemble Anthropic streaming events into content blocks. Pure.

The Messages API streams ``message_start``, then per block ``content_block_start``,
``content_block_delta`` (``text_delta``, ``input_json_delta``, ``thinking_delta``,
``signature_delta``) and ``content_block_stop``, then ``message_delta`` (stop reason,
usage) and ``message_stop``. :class:`MessageAccumulator` is fed those events as
dicts, returns each block when it completes (the agent emits one ``assistant``
message per block, as the stock CLI does), and can report the text streamed so far
when a turn is interrupted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


class StreamProtocolError(ValueError):
    """The event stream broke the Messages API's streaming grammar."""


@dataclass
class _Block:
    index: int
    block: dict[str, Any]
    json_parts: list[str] = field(default_factory=list)
    text_parts: list[str] = field(default_factory=list)

    def snapshot(self) -> dict[str, Any]:
        out = dict(self.block)
        kind = out.get("type")
        if kind == "text":
            out["text"] = str(out.get("text") or "") + "".join(self.text_parts)
        elif kind == "thinking":
            out["thinking"] = str(out.get("thinking") or "") + "".join(self.text_parts)
        return out


@dataclass(frozen=True)
class CompletedBlock:
    index: int
    block: dict[str, Any]
    invalid_input: str | None = None
    """For tool_use: the raw input JSON when it did not parse (the block's input is then ``{}``)."""


class MessageAccumulator:
    def __init__(self) -> None:
        self.message: dict[str, Any] | None = None
        self.usage: dict[str, Any] = {}
        self.start_usage: dict[str, Any] = {}
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.completed: list[CompletedBlock] = []
        self._open: dict[int, _Block] = {}
        self.stopped = False

    @property
    def started(self) -> bool:
        return self.message is not None

    @property
    def message_id(self) -> str | None:
        return None if self.message is None else self.message.get("id")

    @property
    def model(self) -> str | None:
        return None if self.message is None else self.message.get("model")

    @property
    def open_indices(self) -> list[int]:
        return sorted(self._open)

    def feed(self, event: dict[str, Any]) -> CompletedBlock | None:
        """Consume one event; return the block it completed, if any."""
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message")
            if not isinstance(msg, dict):
                raise StreamProtocolError("message_start without a message")
            self.message = dict(msg)
            usage = msg.get("usage")
            if isinstance(usage, dict):
                self.start_usage = dict(usage)
                self.usage = dict(usage)
            return None
        if kind == "content_block_start":
            index = _index(event)
            block = event.get("content_block")
            if not isinstance(block, dict):
                raise StreamProtocolError("content_block_start without a content_block")
            self._open[index] = _Block(index, dict(block))
            return None
        if kind == "content_block_delta":
            state = self._open.get(_index(event))
            if state is None:
                raise StreamProtocolError(f"delta for block {_index(event)} that is not open")
            delta = event.get("delta")
            if isinstance(delta, dict):
                dkind = delta.get("type")
                if dkind == "text_delta":
                    state.text_parts.append(str(delta.get("text", "")))
                elif dkind == "input_json_delta":
                    state.json_parts.append(str(delta.get("partial_json", "")))
                elif dkind == "thinking_delta":
                    state.text_parts.append(str(delta.get("thinking", "")))
                elif dkind == "signature_delta":
                    state.block["signature"] = str(delta.get("signature", ""))
            return None
        if kind == "content_block_stop":
            state = self._open.pop(_index(event), None)
            if state is None:
                raise StreamProtocolError(f"stop for block {_index(event)} that is not open")
            done = self._finish(state)
            self.completed.append(done)
            return done
        if kind == "message_delta":
            delta = event.get("delta")
            if isinstance(delta, dict):
                reason = delta.get("stop_reason")
                self.stop_reason = reason if isinstance(reason, str) else self.stop_reason
                seq = delta.get("stop_sequence")
                self.stop_sequence = seq if isinstance(seq, str) else self.stop_sequence
            usage = event.get("usage")
            if isinstance(usage, dict):
                self.usage.update({k: v for k, v in usage.items() if v is not None})
            return None
        if kind == "message_stop":
            self.stopped = True
            return None
        if kind == "error":
            err = event.get("error")
            message = err.get("message") if isinstance(err, dict) else None
            raise StreamProtocolError(f"the model stream reported an error: {message or event}")
        return None  # ping and future event types

    @staticmethod
    def _finish(state: _Block) -> CompletedBlock:
        block = state.snapshot()
        if block.get("type") in ("tool_use", "server_tool_use"):
            raw = "".join(state.json_parts)
            if not raw.strip():
                original = block.get("input")
                block["input"] = original if isinstance(original, dict) else {}
                return CompletedBlock(state.index, block)
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                block["input"] = {}
                return CompletedBlock(state.index, block, invalid_input=raw)
            if not isinstance(parsed, dict):
                block["input"] = {}
                return CompletedBlock(state.index, block, invalid_input=raw)
            block["input"] = parsed
        return CompletedBlock(state.index, block)

    def partial_blocks(self) -> list[dict[str, Any]]:
        """Blocks still streaming, as far as they got: only non-empty text (a half tool call is dropped)."""
        out = []
        for index in self.open_indices:
            snap = self._open[index].snapshot()
            if snap.get("type") == "text" and snap.get("text"):
                out.append(snap)
        return out

    def content(self) -> list[dict[str, Any]]:
        return [c.block for c in sorted(self.completed, key=lambda c: c.index)]


def _index(event: dict[str, Any]) -> int:
    index = event.get("index")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise StreamProtocolError(f"{event.get('type')} has no valid index")
    return index
