"""Drive a real ``tether agent`` subprocess over stdin/stdout (threads read; waits are condition waits)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[2]
BASE_ARGS = ["-p", "--input-format", "stream-json", "--output-format", "stream-json", "--verbose"]
STREAM_ARGS = [*BASE_ARGS, "--replay-user-messages", "--permission-prompt-tool", "stdio"]
DEFAULT_TIMEOUT = 20.0

Message = dict[str, Any]
Predicate = Callable[[Message], bool]


def clean_env(home: pathlib.Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_")) and k != "TETHER_DEBUG"}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def is_type(kind: str, subtype: str | None = None) -> Predicate:
    def check(m: Message) -> bool:
        if m.get("type") != kind:
            return False
        if subtype is None:
            return True
        inner = m.get("request") or m.get("response") or {}
        return m.get("subtype") == subtype or (isinstance(inner, dict) and inner.get("subtype") == subtype)
    return check


def user(text: str | list[Any], uuid: str | None = None) -> Message:
    msg: Message = {"type": "user", "session_id": "", "message": {"role": "user", "content": text},
                    "parent_tool_use_id": None}
    if uuid is not None:
        msg["uuid"] = uuid
    return msg


def control(subtype: str, request_id: str, **fields: Any) -> Message:
    return {"type": "control_request", "request_id": request_id, "request": {"subtype": subtype, **fields}}


def allow(request: Message, updated_input: dict[str, Any] | None = None, **extra: Any) -> Message:
    body = {"behavior": "allow", "updatedInput": request["request"]["input"] if updated_input is None
            else updated_input, **extra}
    return {"type": "control_response", "response": {"subtype": "success", "request_id": request["request_id"],
                                                     "response": body}}


def deny(request: Message, message: str = "Denied by remote operator", interrupt: bool = False) -> Message:
    body: dict[str, Any] = {"behavior": "deny", "message": message}
    if interrupt:
        body["interrupt"] = True
    return {"type": "control_response", "response": {"subtype": "success", "request_id": request["request_id"],
                                                     "response": body}}


class AgentProc:
    """One ``tether agent`` process; stdout lines are parsed as they arrive."""

    def __init__(self, args: Sequence[str], cwd: pathlib.Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli.main", "agent", *args], cwd=cwd, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.messages: list[Message] = []
        self.bad_lines: list[bytes] = []
        self.stderr_lines: list[str] = []
        self.cursor = 0
        self._cond = threading.Condition()
        self._eof = False
        self._threads = [threading.Thread(target=self._read_stdout, daemon=True),
                         threading.Thread(target=self._read_stderr, daemon=True)]
        for t in self._threads:
            t.start()

    # --- reading ---------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                msg = json.loads(raw)
            except json.JSONDecodeError:
                with self._cond:
                    self.bad_lines.append(raw)
                continue
            with self._cond:
                self.messages.append(msg)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self._cond:
                self.stderr_lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.stderr_lines)

    def wait_count(self, count: int, timeout: float = DEFAULT_TIMEOUT) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(self._report(f"expected {count} output lines"))
                self._cond.wait(left)
            return list(self.messages)

    def expect(self, predicate: Predicate, timeout: float = DEFAULT_TIMEOUT, what: str = "a message") -> Message:
        """The next message (from the cursor) matching ``predicate``; the cursor moves past it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(self.cursor, len(self.messages)):
                    if predicate(self.messages[i]):
                        self.cursor = i + 1
                        return self.messages[i]
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise AssertionError(self._report(f"no {what} arrived"))
                self._cond.wait(left)

    def result(self, timeout: float = DEFAULT_TIMEOUT) -> Message:
        return self.expect(is_type("result"), timeout, "result")

    def _report(self, headline: str) -> str:
        lines = [json.dumps(m)[:300] for m in self.messages[-15:]]
        return (f"{headline} (exit={self.proc.poll()})\n-- last output:\n" + "\n".join(lines)
                + f"\n-- stderr:\n{chr(10).join(self.stderr_lines[-20:])}")

    # --- writing ----------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        self.send_raw((json.dumps(message) + "\n").encode())

    def send_raw(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        if not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait_exit(self, timeout: float = DEFAULT_TIMEOUT) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(self._report(f"the agent did not exit within {timeout} s")) from None
        for t in self._threads:
            t.join(5)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass


def wait_until(predicate: Callable[[], Any], timeout: float = DEFAULT_TIMEOUT, what: str = "condition") -> Any:
    """Poll a condition that has no notification (a file appearing, a process going away)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def processes_with(token: str) -> list[int]:
    """Pids whose command line contains ``token`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmd = fh.read().replace(b"\x00", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if token in cmd and int(entry) != os.getpid():
            found.append(int(entry))
    return found


def run_turn(proc: AgentProc, text: str, answer: Callable[[Message], Message | None] | None = None,
             uuid: str | None = None, timeout: float = DEFAULT_TIMEOUT) -> tuple[list[Message], Message]:
    """Send a prompt and read until its result; ``answer`` replies to each ``can_use_tool``."""
    start = proc.cursor
    proc.send(user(text, uuid))
    while True:
        msg = proc.expect(lambda m: m.get("type") == "result" or (
            m.get("type") == "control_request" and m["request"].get("subtype") == "can_use_tool"), timeout)
        if msg["type"] == "result":
            with proc._cond:
                return list(proc.messages[start:proc.cursor]), msg
        reply = answer(msg) if answer is not None else None
        if reply is not None:
            proc.send(reply)


def asked(messages: list[Message]) -> list[Message]:
    return [m for m in messages if m.get("type") == "control_request" and m["request"].get("subtype") == "can_use_tool"]


def tool_results(messages: list[Message]) -> list[dict[str, Any]]:
    return [b for m in messages if m.get("type") == "user" and not m.get("isReplay")
            and isinstance(m["message"]["content"], list)
            for b in m["message"]["content"] if b.get("type") == "tool_result"]
