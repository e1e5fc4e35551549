r"""Scenario files for the ``scripted`` model backend. Pure.

A scenario is a plain text file of *replies*. Each model request picks one reply and
streams it as Messages API events (``message_start`` … ``message_stop``), so the agent
runs exactly the code it runs against the real API. Format, one directive per line;
blank lines and lines starting with ``#`` are ignored::

    reply [TRIGGER]              start a reply. TRIGGER is one of:
                                   (none)             matches every request
                                   on prompt          the last user message is a prompt
                                   when <words>       ... a prompt containing <words> (case-insensitive)
                                   after tool         the last user message carries tool results
    text <words>                 start a text block
    more <words>                 continue the current text block (a new delta)
    tool <Name> key=value ...    a tool_use block; values are shell-quoted words;
                                 key:=value takes a number / true / false / null
    chunk <n>                    split following text and tool input into deltas of n characters
                                 (default: one delta per line)
    delay <seconds>              wait before each following delta (default 0)
    pause <seconds>              wait once, here (e.g. to interrupt mid-stream)
    stop <reason>                stop_reason (default: tool_use when the reply has a tool, else end_turn)
    fail <status> <message>      the request fails here with this HTTP status and message

``<words>`` may be wrapped in double quotes to keep leading or trailing spaces. In
words and values, ``\n``, ``\t`` and ``\\`` are escapes (and ``\"`` in words; a tool value
that holds double quotes goes in single quotes), and the placeholders
``{prompt}`` (the last prompt's text) and ``{tool_result}`` (the last tool result's
text, at most 300 characters) are filled in.

Choosing a reply: the first trigger in the file that matches the request decides;
replies with that same trigger are used in turn, and the last of them repeats (so
``reply / reply / reply`` plays in order, and a keyword scenario keeps answering).
When nothing matches, the model answers a fixed "no reply matches" text.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

TriggerKind = Literal["any", "prompt", "when", "tool"]
MAX_TOOL_RESULT_IN_TEXT: Final = 300

DEFAULT_SCENARIO: Final = """\
# Tether's built-in scenario: answer, ask for a tool that needs permission, report the result.
reply after tool
text The Write tool answered: {tool_result}
more \\nDone.

reply on prompt
text I'll write a note with the Write tool.
tool Write file_path=tether-note.txt content="Hello from Tether's scripted model.\\n"
"""


class ScenarioError(ValueError):
    """The scenario file is malformed; ``str(exc)`` names the line."""


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind = "any"
    words: str = ""

    def matches(self, last_is_tool_result: bool, prompt_text: str) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "tool":
            return last_is_tool_result
        if last_is_tool_result:
            return False
        return self.kind == "prompt" or self.words.lower() in prompt_text.lower()


@dataclass(frozen=True)
class TextStep:
    text: str
    new_block: bool


@dataclass(frozen=True)
class ToolStep:
    name: str
    input: dict[str, Any]


@dataclass(frozen=True)
class SetChunk:
    size: int


@dataclass(frozen=True)
class SetDelay:
    seconds: float


@dataclass(frozen=True)
class PauseStep:
    seconds: float


@dataclass(frozen=True)
class StopStep:
    reason: str


@dataclass(frozen=True)
class FailStep:
    status: int
    message: str


Step = TextStep | ToolStep | SetChunk | SetDelay | PauseStep | StopStep | FailStep


@dataclass
class Reply:
    trigger: Trigger
    steps: list[Step] = field(default_factory=list)
    line: int = 0


def _unescape(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            out.append({"n": "\n", "t": "\t", '"': '"', "\\": "\\"}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _words(rest: str) -> str:
    if len(rest) >= 2 and rest.startswith('"') and rest.endswith('"'):
        rest = rest[1:-1]
    return _unescape(rest)


def _number(text: str, what: str, line: int) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ScenarioError(f"line {line}: {what} needs a number, got {text!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ScenarioError(f"line {line}: {what} must be a finite number ≥ 0, got {text!r}")
    return value


def _tool(rest: str, line: int) -> ToolStep:
    try:
        parts = shlex.split(rest.replace("\\", "\\\\"), posix=True)
    except ValueError as exc:
        raise ScenarioError(f"line {line}: tool: {exc}") from None
    if not parts:
        raise ScenarioError(f"line {line}: tool needs a tool name")
    name, args = parts[0], parts[1:]
    tool_input: dict[str, Any] = {}
    for arg in args:
        if arg.find(":=") != -1 and arg.find(":=") + 1 == arg.find("="):
            key, raw = arg.split(":=", 1)
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                raise ScenarioError(f"line {line}: {key}:= takes a number, true, false or null") from None
            if isinstance(value, dict | list):
                raise ScenarioError(f"line {line}: {key}:= takes a number, true, false or null")
            tool_input[key] = value
        elif "=" in arg:
            key, raw = arg.split("=", 1)
            tool_input[key] = _unescape(raw)
        else:
            raise ScenarioError(f"line {line}: tool argument {arg!r} is not key=value")
        if not key:
            raise ScenarioError(f"line {line}: tool argument {arg!r} has an empty key")
    return ToolStep(name, tool_input)


def _trigger(rest: str, line: int) -> Trigger:
    rest = rest.strip()
    if not rest:
        return Trigger()
    head, _, tail = rest.partition(" ")
    if head == "on" and tail.strip() == "prompt":
        return Trigger("prompt")
    if head == "after" and tail.strip() == "tool":
        return Trigger("tool")
    if head == "when" and tail.strip():
        return Trigger("when", _words(tail.strip()))
    raise ScenarioError(f"line {line}: unknown reply trigger {rest!r} (use: on prompt, when <words>, after tool)")


def parse_scenario(text: str) -> list[Reply]:
    replies: list[Reply] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        if keyword == "reply":
            replies.append(Reply(_trigger(rest, number), line=number))
            continue
        if not replies:
            raise ScenarioError(f"line {number}: {keyword!r} before the first 'reply'")
        steps = replies[-1].steps
        if keyword == "text":
            steps.append(TextStep(_words(rest), True))
        elif keyword == "more":
            steps.append(TextStep(_words(rest), False))
        elif keyword == "tool":
            steps.append(_tool(rest, number))
        elif keyword == "chunk":
            size = _number(rest, "chunk", number)
            if size < 1:
                raise ScenarioError(f"line {number}: chunk must be at least 1")
            steps.append(SetChunk(int(size)))
        elif keyword == "delay":
            steps.append(SetDelay(_number(rest, "delay", number)))
        elif keyword == "pause":
            steps.append(PauseStep(_number(rest, "pause", number)))
        elif keyword == "stop":
            if not rest.strip():
                raise ScenarioError(f"line {number}: stop needs a reason")
            steps.append(StopStep(rest.strip()))
        elif keyword == "fail":
            status, _, message = rest.strip().partition(" ")
            if not status.isdigit():
                raise ScenarioError(f"line {number}: fail needs an HTTP status, got {status!r}")
            steps.append(FailStep(int(status), _words(message.strip()) or "scripted failure"))
        else:
            raise ScenarioError(f"line {number}: unknown directive {keyword!r}")
    if not replies:
        raise ScenarioError("the scenario has no 'reply'")
    return replies


# --- playing a reply -------------------------------------------------------------------


@dataclass(frozen=True)
class Emit:
    event: dict[str, Any]


@dataclass(frozen=True)
class Wait:
    seconds: float


@dataclass(frozen=True)
class Fail:
    status: int
    message: str


Action = Emit | Wait | Fail


def conversation_facts(messages: Sequence[Mapping[str, Any]]) -> tuple[bool, str, str]:
    """(last user message carries tool results, last prompt text, last tool result text)."""
    last_is_tool = False
    prompt = ""
    tool_result = ""
    seen_last = False
    for msg in reversed(messages):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else (
            [b for b in content if isinstance(b, Mapping)] if isinstance(content, list) else [])
        results = [b for b in blocks if b.get("type") == "tool_result"]
        texts = [str(b.get("text", "")) for b in blocks if b.get("type") == "text"]
        if not seen_last:
            seen_last = True
            # a prompt merged after an interrupted tool call ends with text: it is a prompt
            last_is_tool = bool(results) and blocks[-1].get("type") == "tool_result"
            if results:
                tool_result = _result_text(results[-1])
        if texts and not (results and blocks[-1].get("type") == "tool_result"):
            prompt = "\n".join(texts)
            break
    return last_is_tool, prompt, tool_result


def _result_text(block: Mapping[str, Any]) -> str:
    content = block.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping))
    else:
        text = ""
    return text[:MAX_TOOL_RESULT_IN_TEXT]


class ScriptedModel:
    """Chooses replies and turns them into stream events (deterministic ids)."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = replies
        self.used: set[int] = set()
        self.requests = 0

    def choose(self, messages: Sequence[Mapping[str, Any]]) -> Reply | None:
        last_is_tool, prompt, _ = conversation_facts(messages)
        first = next((r for r in self.replies if r.trigger.matches(last_is_tool, prompt)), None)
        if first is None:
            return None
        group = [i for i, r in enumerate(self.replies) if r.trigger == first.trigger]
        fresh = [i for i in group if i not in self.used]
        index = fresh[0] if fresh else group[-1]
        self.used.add(index)
        return self.replies[index]

    def play(self, messages: Sequence[Mapping[str, Any]], model: str, input_tokens: int) -> list[Action]:
        self.requests += 1
        n = self.requests
        _, prompt, tool_result = conversation_facts(messages)
        reply = self.choose(messages)
        steps: list[Step] = reply.steps if reply is not None else [
            TextStep("(scripted model: no reply in the scenario matches this request)", True)]
        fill = {"{prompt}": prompt, "{tool_result}": tool_result}
        actions: list[Action] = [Emit({"type": "message_start", "message": {
            "id": f"msg_scripted_{n:04d}", "type": "message", "role": "assistant", "model": model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}})]
        index = -1
        open_text = False
        chunk = 0
        delay = 0.0
        stop: str | None = None
        has_tool = False
        out_chars = 0

        def deltas(text: str) -> list[str]:
            if not chunk:
                return [text]
            return [text[i:i + chunk] for i in range(0, len(text), chunk)] or [""]

        def close() -> None:
            nonlocal open_text
            if open_text:
                actions.append(Emit({"type": "content_block_stop", "index": index}))
                open_text = False

        for step in steps:
            if isinstance(step, SetChunk):
                chunk = step.size
            elif isinstance(step, SetDelay):
                delay = step.seconds
            elif isinstance(step, PauseStep):
                actions.append(Wait(step.seconds))
            elif isinstance(step, StopStep):
                stop = step.reason
            elif isinstance(step, FailStep):
                actions.append(Fail(step.status, step.message))
                return actions
            elif isinstance(step, TextStep):
                if step.new_block or not open_text:
                    close()
                    index += 1
                    open_text = True
                    actions.append(Emit({"type": "content_block_start", "index": index,
                                         "content_block": {"type": "text", "text": ""}}))
                text = _fill(step.text, fill)
                out_chars += len(text)
                for piece in deltas(text):
                    if delay:
                        actions.append(Wait(delay))
                    actions.append(Emit({"type": "content_block_delta", "index": index,
                                         "delta": {"type": "text_delta", "text": piece}}))
            else:
                close()
                index += 1
                has_tool = True
                tool_input = {k: _fill(v, fill) if isinstance(v, str) else v for k, v in step.input.items()}
                actions.append(Emit({"type": "content_block_start", "index": index, "content_block": {
                    "type": "tool_use", "id": f"toolu_scripted_{n:04d}_{index}", "name": step.name,
                    "input": {}}}))
                raw = json.dumps(tool_input, ensure_ascii=False)
                out_chars += len(raw)
                for piece in deltas(raw):
                    if delay:
                        actions.append(Wait(delay))
                    actions.append(Emit({"type": "content_block_delta", "index": index,
                                         "delta": {"type": "input_json_delta", "partial_json": piece}}))
                actions.append(Emit({"type": "content_block_stop", "index": index}))
        close()
        reason = stop or ("tool_use" if has_tool else "end_turn")
        actions.append(Emit({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": None},
                             "usage": {"output_tokens": max(1, out_chars // 4)}}))
        actions.append(Emit({"type": "message_stop"}))
        return actions


def _fill(text: str, values: Mapping[str, str]) -> str:
    for key, value in values.items():
        text = text.replace(key, value)
    return text
