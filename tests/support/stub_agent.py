"""A scripted stand-in for the agent process (the stock `claude` CLI or `tether agent`).

Speaks stream-json on stdin/stdout like ``claude -p --input-format stream-json
--output-format stream-json --verbose --replay-user-messages --permission-prompt-tool stdio``
(see tests/fixtures/claude-cli). What a turn does depends on a keyword in the prompt:

- ``TOOL``: asks ``can_use_tool`` for an Edit of ``src/app.py`` and waits for the answer
  (allow → tool result, text, ``result/success``; deny → error tool result and
  ``permission_denials``; deny with ``interrupt`` or an ``interrupt`` → aborted turn).
- ``HUGETOOL``: the same with a Write whose input (a 1.5 MiB file) makes the ``assistant``
  message, the ``can_use_tool`` request and, on a deny, the ``result`` (its
  ``permission_denials``) larger than the server's 1 MiB event limit.
- ``SLOW``: streams a delta every 50 ms (up to 20 s) until interrupted.
- ``WAITFILE <path>``: says "waiting", waits for ``<path>`` to exist, then sends five
  assistant messages and a result.
- ``GARBAGE``: prints a non-JSON line, a JSON array and a 2 MiB line, then answers normally.
- ``EXIT <n>``: writes to stderr and exits with status ``n``.
- anything else: streams (with ``--include-partial-messages``) and answers ``echo: <text>``.

``STUB_AGENT_LOG=<file>`` appends every stdin line to that file.
Run as ``python tests/support/stub_agent.py <the flags above>``.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
import uuid
from typing import Any

ARGS = sys.argv[1:]
PARTIAL = "--include-partial-messages" in ARGS
REPLAY = "--replay-user-messages" in ARGS
SESSION_ID = str(uuid.uuid4())
CWD = os.getcwd()
_out_lock = threading.Lock()
_log_path = os.environ.get("STUB_AGENT_LOG")


def arg_value(flag: str, default: str) -> str:
    return ARGS[ARGS.index(flag) + 1] if flag in ARGS and ARGS.index(flag) + 1 < len(ARGS) else default


MODEL = arg_value("--model", "stub-model")
MODE = arg_value("--permission-mode", "default")


def emit(obj: dict[str, Any]) -> None:
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def emit_raw(text: str) -> None:
    with _out_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def new_uuid() -> str:
    return str(uuid.uuid4())


inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()


def read_stdin() -> None:
    for raw in sys.stdin:
        if _log_path:
            with open(_log_path, "a", encoding="utf-8") as f:
                f.write(raw if raw.endswith("\n") else raw + "\n")
        line = raw.strip()
        if not line:
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            sys.stderr.write(f"Error: stdin line is not JSON: {line[:80]}\n")
            sys.stderr.flush()
            os._exit(1)
        inbox.put(msg)
    inbox.put(None)


class Interrupted(Exception):
    pass


class Agent:
    def __init__(self) -> None:
        self.initialized = False
        self.seen: set[str] = set()
        self.deferred: list[dict[str, Any]] = []
        self.pending: dict[str, dict[str, Any]] = {}
        self.last_error = False
        self.model = MODEL
        self.mode = MODE

    # -- control ---------------------------------------------------------------------

    def answer(self, request_id: str, response: dict[str, Any] | None = None) -> None:
        body: dict[str, Any] = {"subtype": "success", "request_id": request_id}
        if response is not None:
            body["response"] = response
        emit({"type": "control_response", "response": body})

    def error(self, request_id: str, text: str, **extra: Any) -> None:
        emit({"type": "control_response",
              "response": {"subtype": "error", "request_id": request_id, "error": text, **extra}})

    def control(self, msg: dict[str, Any], in_turn: bool) -> None:
        """Handle a control_request; raise Interrupted for an interrupt during a turn."""
        rid = msg.get("request_id", "")
        req = msg.get("request") or {}
        sub = req.get("subtype")
        if sub == "initialize":
            if self.initialized:
                self.error(rid, "Already initialized",
                           pending_permission_requests=list(self.pending.values()))
                return
            self.initialized = True
            self.answer(rid, {
                "commands": [{"name": "stub", "description": "A stub command", "argumentHint": ""}],
                "agents": [], "output_style": "default", "available_output_styles": ["default"],
                "models": [{"value": self.model, "displayName": "Stub", "description": "stub"}],
                "account": {"tokenSource": "none", "apiKeySource": "none"}, "pid": os.getpid(),
            })
        elif sub == "interrupt":
            if in_turn:
                raise Interrupted(rid)
            self.answer(rid, {"still_queued": []})
        elif sub == "set_model":
            self.model = req.get("model") or MODEL
            self.answer(rid)
        elif sub == "set_permission_mode":
            self.mode = req.get("mode") or "default"
            self.answer(rid)
            emit({"type": "system", "subtype": "status", "status": None, "permissionMode": self.mode,
                  "session_id": SESSION_ID, "uuid": new_uuid()})
        elif sub == "end_session":
            self.answer(rid)
            sys.exit(0)
        else:
            self.error(rid, f"Unsupported control request subtype: {sub}", error_code="unsupported_request")

    def poll(self, timeout: float) -> dict[str, Any] | None:
        """One inbound message during a turn (control handled here; users deferred)."""
        try:
            msg = inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if msg is None:
            inbox.put(None)
            return None
        kind = msg.get("type")
        if kind == "control_request":
            self.control(msg, in_turn=True)
            return None
        if kind == "user":
            self.deferred.append(msg)
            return None
        return msg

    # -- turns -----------------------------------------------------------------------

    def turn(self, msg: dict[str, Any]) -> None:
        muid = msg.get("uuid") or new_uuid()
        if REPLAY:
            emit({**msg, "session_id": SESSION_ID, "uuid": muid, "isReplay": True,
                  "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        if muid in self.seen:
            return
        self.seen.add(muid)
        content = (msg.get("message") or {}).get("content")
        text = content if isinstance(content, str) else " ".join(
            b.get("text", "") for b in content or [] if isinstance(b, dict))
        emit({"type": "system", "subtype": "init", "cwd": CWD, "session_id": SESSION_ID, "tools": ["Edit", "Bash"],
              "mcp_servers": [], "model": self.model, "permissionMode": self.mode, "slash_commands": ["stub"],
              "apiKeySource": "none", "output_style": "default", "uuid": new_uuid()})
        started = time.monotonic()
        try:
            if "EXIT" in text.split():
                code = int(text.split()[text.split().index("EXIT") + 1])
                sys.stderr.write("stub agent: exiting on request\n")
                sys.stderr.write(f"stub agent: status {code}\n")
                sys.stderr.flush()
                os._exit(code)
            if "GARBAGE" in text:
                emit_raw("this is not json")
                emit_raw("[1, 2, 3]")
                emit_raw(json.dumps({"type": "assistant", "pad": "x" * (2 << 20)}))
                self.finish_text("after garbage", started)
            elif "HUGETOOL" in text:
                self.tool_turn(started, "Write", {"file_path": os.path.join(CWD, "big.txt"), "content": "x" * (3 << 19)},
                               "big.txt")
            elif "TOOL" in text:
                edit = {"file_path": os.path.join(CWD, "src", "app.py"), "old_string": "a", "new_string": "b"}
                self.tool_turn(started, "Edit", edit, "src/app.py")
            elif "SLOW" in text:
                self.slow_turn(started)
            elif "WAITFILE" in text:
                self.waitfile_turn(text.split()[text.split().index("WAITFILE") + 1], started)
            else:
                self.stream_text(f"echo: {text}")
                self.finish_text(f"echo: {text}", started)
        except Interrupted as exc:
            for rid in list(self.pending):
                emit({"type": "control_cancel_request", "request_id": rid})
            self.pending.clear()
            self.answer(str(exc), {"still_queued": []})
            emit({"type": "user", "message": {"role": "user", "content": [
                {"type": "text", "text": "[Request interrupted by user]"}]}, "parent_tool_use_id": None,
                "session_id": SESSION_ID, "uuid": new_uuid()})
            self.result(started, subtype="error_during_execution", errors=["interrupted"])

    def stream_text(self, text: str) -> None:
        if not PARTIAL:
            return
        mid = f"msg_{uuid.uuid4().hex[:12]}"
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {"id": mid, "type": "message", "role": "assistant",
                                                  "model": self.model, "content": []}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ]
        for i in range(0, len(text), 4):
            events.append({"type": "content_block_delta", "index": 0,
                           "delta": {"type": "text_delta", "text": text[i:i + 4]}})
        events += [{"type": "content_block_stop", "index": 0},
                   {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}, {"type": "message_stop"}]
        for ev in events:
            emit({"type": "stream_event", "event": ev, "session_id": SESSION_ID, "parent_tool_use_id": None,
                  "uuid": new_uuid()})

    def assistant(self, blocks: list[dict[str, Any]]) -> None:
        emit({"type": "assistant", "message": {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message",
                                               "role": "assistant", "model": self.model, "content": blocks},
              "parent_tool_use_id": None, "session_id": SESSION_ID, "uuid": new_uuid()})

    def finish_text(self, text: str, started: float, **extra: Any) -> None:
        self.assistant([{"type": "text", "text": text}])
        self.result(started, result=text, **extra)

    def result(self, started: float, subtype: str = "success", **extra: Any) -> None:
        self.last_error = subtype != "success"
        body: dict[str, Any] = {
            "type": "result", "subtype": subtype, "is_error": subtype != "success",
            "duration_ms": int((time.monotonic() - started) * 1000), "duration_api_ms": 0, "num_turns": 1,
            "stop_reason": "end_turn", "total_cost_usd": 0.0, "usage": {"input_tokens": 1, "output_tokens": 1},
            "modelUsage": {}, "permission_denials": [], "session_id": SESSION_ID, "uuid": new_uuid(),
        }
        body.update(extra)
        emit(body)

    def tool_turn(self, started: float, tool: str, tool_input: dict[str, Any], path: str) -> None:
        tool_use_id = f"toolu_{uuid.uuid4().hex[:20]}"
        self.assistant([{"type": "tool_use", "id": tool_use_id, "name": tool, "input": tool_input}])
        rid = new_uuid()
        request = {"type": "control_request", "request_id": rid, "request": {
            "subtype": "can_use_tool", "tool_name": tool, "display_name": tool, "input": tool_input,
            "description": path, "permission_suggestions": [], "tool_use_id": tool_use_id}}
        self.pending[rid] = request
        emit(request)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = self.poll(0.05)
            if msg is None or msg.get("type") != "control_response":
                continue
            resp = msg.get("response") or {}
            if resp.get("request_id") != rid:
                continue
            del self.pending[rid]
            if REPLAY:
                emit(msg)
            decision = resp.get("response") or {}
            if resp.get("subtype") == "success" and decision.get("behavior") == "allow":
                self.tool_result(tool_use_id, f"The file {path} has been updated.", False)
                self.finish_text(f"Edited {path}.", started)
            else:
                message = decision.get("message") or resp.get("error") or "denied"
                self.tool_result(tool_use_id, message, True)
                denial = [{"tool_name": tool, "tool_use_id": tool_use_id, "tool_input": tool_input}]
                if decision.get("interrupt"):
                    self.result(started, subtype="error_during_execution", errors=["denied with interrupt"],
                                permission_denials=denial)
                else:
                    self.finish_text("Understood, not editing.", started, permission_denials=denial)
            return
        self.result(started, subtype="error_during_execution", errors=["no permission answer"])

    def tool_result(self, tool_use_id: str, text: str, is_error: bool) -> None:
        emit({"type": "user", "message": {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": tool_use_id, "content": text, "is_error": is_error}]},
            "parent_tool_use_id": None, "session_id": SESSION_ID, "uuid": new_uuid(),
            "tool_use_result": {"stdout": text}})

    def slow_turn(self, started: float) -> None:
        for _ in range(400):
            emit({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0,
                  "delta": {"type": "text_delta", "text": "tick "}}, "session_id": SESSION_ID,
                  "parent_tool_use_id": None, "uuid": new_uuid()})
            self.poll(0.05)
        self.finish_text("tick " * 400, started)

    def waitfile_turn(self, path: str, started: float) -> None:
        self.assistant([{"type": "text", "text": "waiting"}])
        deadline = time.monotonic() + 30
        while not os.path.exists(path) and time.monotonic() < deadline:
            self.poll(0.02)
        for i in range(5):
            self.assistant([{"type": "text", "text": f"tick {i}"}])
        self.result(started, result="waited")

    def run(self) -> int:
        while True:
            if self.deferred:
                msg: dict[str, Any] | None = self.deferred.pop(0)
            else:
                msg = inbox.get()
            if msg is None:
                return 1 if self.last_error else 0
            kind = msg.get("type")
            if kind == "control_request":
                self.control(msg, in_turn=False)
            elif kind == "user":
                self.turn(msg)
            elif kind == "control_response" and REPLAY:
                emit(msg)  # the stock CLI echoes answers with --replay-user-messages
            # keep_alive, update_environment_variables and unknown types are ignored


def main() -> None:
    threading.Thread(target=read_stdin, daemon=True).start()
    code = Agent().run()
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
