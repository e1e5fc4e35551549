"""A fake Anthropic Messages API on loopback, for the agent and the stock ``claude`` CLI.

A real HTTP server (Starlette on uvicorn, in a background thread with its own event
loop) that streams Server-Sent Events exactly like the real API::

    message_start, ping, then per block content_block_start / content_block_delta
    (text_delta or input_json_delta) / content_block_stop, then message_delta
    (stop_reason, usage) and message_stop

Each response is scripted per test: queue :class:`Reply` objects with
:meth:`FakeAnthropic.enqueue`, or pass a ``responder(body) -> Reply``; with neither,
:func:`keyword_reply` answers like the fake model the CLI fixtures were recorded
with (``TOOLBASH``, ``TOOLWRITE``, ``SLEEPTOOL``, ``SLOW``, tool results → ``Tool said:
TOOL_RESULT:…``, else ``Hello from the fake model.``). Every request is recorded
(method, path with query, headers, JSON body) and whether its stream ran to the end.

What the stock CLI needs (docs/protocol.md §14.2–§14.3): ``POST
/v1/messages?beta=true`` with ``stream: true``; ``role: "system"`` entries may follow
the user turn, so the last ``role: "user"`` message is what a reply is chosen from.
``POST /v1/messages/count_tokens`` and ``GET /v1/models`` are answered too, and
non-streaming ``POST /v1/messages`` gets a whole message.

A :class:`Reply` can *hold* its stream after a number of deltas until the test calls
:meth:`Reply.release` (or the server stops), so interrupt tests never race a timer.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_MODEL = "claude-sonnet-4-5"
_ids = itertools.count(1)


@dataclass
class Text:
    text: str
    chunk: int | None = None
    """Characters per delta (None: two deltas, split in the middle, like the recorded fake)."""


@dataclass
class ToolUse:
    name: str
    input: dict[str, Any]
    id: str | None = None
    chunk: int | None = None


Block = Text | ToolUse


@dataclass
class Reply:
    blocks: list[Block] = field(default_factory=list)
    stop_reason: str | None = None
    """Default: ``tool_use`` when a block is a tool use, else ``end_turn``."""
    delay_s: float = 0.0
    """Pause before each delta."""
    hold_after: int | None = None
    """Stop streaming after this many deltas until :meth:`release` (or the server stops)."""
    status: int = 200
    error_type: str = "api_error"
    error_message: str = "fake error"
    input_tokens: int = 10
    output_tokens: int = 5
    model: str | None = None
    _released: threading.Event = field(default_factory=threading.Event, repr=False)
    reached_hold: threading.Event = field(default_factory=threading.Event, repr=False)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list, repr=False)

    def release(self) -> None:
        """Let a held stream go on (callable from any thread)."""
        self._released.set()
        for loop, event in list(self._waiters):
            loop.call_soon_threadsafe(event.set)

    async def _wait_released(self) -> None:
        event = asyncio.Event()
        self._waiters.append((asyncio.get_running_loop(), event))
        if not self._released.is_set():
            await event.wait()


def text_reply(text: str, **kwargs: Any) -> Reply:
    chunk = kwargs.pop("chunk", None)
    return Reply([Text(text, chunk)], **kwargs)


def tool_reply(name: str, tool_input: dict[str, Any], text: str | None = None, **kwargs: Any) -> Reply:
    blocks: list[Block] = [Text(text)] if text else []
    blocks.append(ToolUse(name, tool_input))
    return Reply(blocks, **kwargs)


def error_reply(status: int, error_type: str, message: str) -> Reply:
    return Reply(status=status, error_type=error_type, error_message=message)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    completed: bool = False
    """For streams: every event was sent (False when the client went away first)."""


def last_user_message(body: Any) -> dict[str, Any] | None:
    """The last ``role: "user"`` message (``system`` entries may come after it)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    for msg in reversed(messages or []):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return msg
    return None


def user_text(msg: dict[str, Any] | None) -> str:
    if msg is None:
        return ""
    content = msg.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(str(b.get("text", "")) for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


def tool_results(msg: dict[str, Any] | None) -> list[dict[str, Any]]:
    content = msg.get("content") if msg else None
    return [b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"]


def keyword_reply(body: Any) -> Reply:
    """The fake model of the CLI fixtures (tests/fixtures/claude-cli/README.md)."""
    last = last_user_message(body)
    results = tool_results(last)
    if results:
        content = results[-1].get("content")
        text = content if isinstance(content, str) else "".join(
            str(b.get("text", "")) for b in content or [] if isinstance(b, dict))
        return text_reply(f"Tool said: TOOL_RESULT:{text}"[:200])
    prompt = user_text(last)
    if "TOOLBASH" in prompt:
        return tool_reply("Bash", {"command": "touch from_bash.txt && echo hi",
                                   "description": "Create a file and print hi"})
    if "TOOLWRITE" in prompt:
        return tool_reply("Write", {"file_path": "hello.txt", "content": "hello from fake model\n"})
    if "SLEEPTOOL" in prompt:
        return tool_reply("Bash", {"command": "python3 -c 'import time; time.sleep(30); print(1)'",
                                   "description": "Long running command"})
    if "SLOW" in prompt:
        return Reply([Text("tick tick tick tick tick ", chunk=5)], hold_after=2)
    return text_reply("Hello from the fake model.")


def _sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def _pieces(text: str, chunk: int | None) -> list[str]:
    if chunk:
        return [text[i:i + chunk] for i in range(0, len(text), chunk)] or [""]
    if len(text) < 2:
        return [text]
    half = len(text) // 2
    return [text[:half], text[half:]]


class FakeAnthropic:
    def __init__(self, responder: Callable[[Any], Reply] | None = None, api_key: str | None = None) -> None:
        self.responder = responder or keyword_reply
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._holds: list[Reply] = []
        self.port = 0
        self.app = Starlette(routes=[
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", self._count_tokens, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/{path:path}", self._not_found, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        ])

    # --- test-facing API ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enqueue(self, *replies: Reply) -> None:
        with self._lock:
            self._queue.extend(replies)

    def message_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]

    def wait_for_requests(self, count: int, timeout: float = 10.0) -> list[RecordedRequest]:
        """Block until ``count`` Messages requests have arrived."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self.requests if r.path.split("?")[0] == "/v1/messages"]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{len(found)} of {count} Messages requests after {timeout} s")
                self._changed.wait(left)

    def start(self) -> FakeAnthropic:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True,
                                        name="fake-anthropic")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the fake Anthropic API did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        for reply in self._holds:
            reply.release()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- HTTP -------------------------------------------------------------------------------------

    async def _record(self, request: Request) -> RecordedRequest:
        raw = await request.body()
        try:
            body: Any = json.loads(raw) if raw else None
        except json.JSONDecodeError:
            body = raw.decode("utf-8", "replace")
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        rec = RecordedRequest(request.method, path, dict(request.headers), body)
        with self._changed:
            self.requests.append(rec)
            self._changed.notify_all()
        return rec

    def _auth_error(self, request: Request) -> Response | None:
        if self.api_key is None:
            return None
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ")
        if given == self.api_key:
            return None
        return _error(401, "authentication_error", "invalid x-api-key")

    def _next_reply(self, body: Any) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.responder(body)

    async def _messages(self, request: Request) -> Response:
        rec = await self._record(request)
        if (denied := self._auth_error(request)) is not None:
            return denied
        body = rec.body if isinstance(rec.body, dict) else {}
        reply = self._next_reply(body)
        if reply.status != 200:
            rec.completed = True
            return _error(reply.status, reply.error_type, reply.error_message)
        model = reply.model or str(body.get("model") or DEFAULT_MODEL)
        request_id = f"req_fake_{uuid.uuid4().hex[:12]}"
        if not body.get("stream"):
            rec.completed = True
            return JSONResponse(_whole_message(reply, model), headers={"request-id": request_id})
        if reply.hold_after is not None:
            self._holds.append(reply)
        return StreamingResponse(self._stream(reply, model, rec), media_type="text/event-stream",
                                 headers={"request-id": request_id, "cache-control": "no-cache"})

    async def _stream(self, reply: Reply, model: str, rec: RecordedRequest) -> AsyncIterator[bytes]:
        msg_id = f"msg_fake_{uuid.uuid4().hex[:16]}"
        yield _sse("message_start", {"type": "message_start", "message": {
            "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}})
        yield _sse("ping", {"type": "ping"})
        deltas = 0
        for index, block in enumerate(reply.blocks):
            if isinstance(block, Text):
                start = {"type": "text", "text": ""}
                pieces = [{"type": "text_delta", "text": p} for p in _pieces(block.text, block.chunk)]
            else:
                start = {"type": "tool_use", "id": block.id or f"toolu_fake_{next(_ids):04d}_{uuid.uuid4().hex[:8]}",
                         "name": block.name, "input": {}}
                pieces = [{"type": "input_json_delta", "partial_json": p}
                          for p in _pieces(json.dumps(block.input), block.chunk)]
            yield _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
            for delta in pieces:
                if reply.hold_after is not None and deltas == reply.hold_after:
                    reply.reached_hold.set()
                    await reply._wait_released()
                if reply.delay_s:
                    await asyncio.sleep(reply.delay_s)
                yield _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                deltas += 1
            yield _sse("content_block_stop", {"type": "content_block_stop", "index": index})
        stop = reply.stop_reason or ("tool_use" if any(isinstance(b, ToolUse) for b in reply.blocks) else "end_turn")
        yield _sse("message_delta", {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None},
                                     "usage": {"output_tokens": reply.output_tokens}})
        yield _sse("message_stop", {"type": "message_stop"})
        rec.completed = True

    async def _count_tokens(self, request: Request) -> Response:
        rec = await self._record(request)
        if (denied := self._auth_error(request)) is not None:
            return denied
        size = len(json.dumps(rec.body.get("messages", []))) if isinstance(rec.body, dict) else 0
        return JSONResponse({"input_tokens": max(1, size // 4)})

    async def _models(self, request: Request) -> Response:
        await self._record(request)
        data = [{"type": "model", "id": m, "display_name": m, "created_at": "2025-09-29T00:00:00Z"}
                for m in (DEFAULT_MODEL, "claude-opus-4-1", "claude-haiku-4-5")]
        return JSONResponse({"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]})

    async def _not_found(self, request: Request) -> Response:
        await self._record(request)
        return _error(404, "not_found_error", f"no route {request.method} {request.url.path}")


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": error_type, "message": message},
                         "request_id": f"req_fake_{uuid.uuid4().hex[:12]}"}, status_code=status)


def _whole_message(reply: Reply, model: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for block in reply.blocks:
        if isinstance(block, Text):
            content.append({"type": "text", "text": block.text})
        else:
            content.append({"type": "tool_use", "id": block.id or f"toolu_fake_{next(_ids):04d}",
                            "name": block.name, "input": block.input})
    stop = reply.stop_reason or ("tool_use" if any(isinstance(b, ToolUse) for b in reply.blocks) else "end_turn")
    return {"id": f"msg_fake_{uuid.uuid4().hex[:16]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
