"""Bash: run a command in the working directory, in its own process group.

The command runs as ``bash -c`` in a new session (so in a new process group); on a
timeout or when the call is cancelled (an interrupt) the whole group gets SIGTERM,
then SIGKILL after a short grace, and the call returns only once the shell is reaped.
Output is captured up to a cap; the rest is counted and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from tether.agent.permissions import CallTarget, PermissionClass
from tether.agent.tools.base import Tool, ToolContext, ToolOutput, object_schema
from tether.protocol.permission_rules import RuleTarget

KILL_GRACE_S: Final = 1.0
PIPE_DRAIN_S: Final = 2.0
READ_CHUNK: Final = 65536


class _Capture:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    async def pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(READ_CHUNK):
            room = self.limit - len(self.data)
            if room > 0:
                self.data += chunk[:room]
            self.dropped += max(0, len(chunk) - max(room, 0))

    def text(self) -> str:
        out = self.data.decode("utf-8", "replace")
        if self.dropped:
            out += f"\n... [output truncated: {self.dropped} more bytes]"
        return out


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


async def kill_process_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the group, SIGKILL it after a grace period, reap the shell."""
    pgid = proc.pid
    try:
        if proc.returncode is None:
            _signal_group(pgid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_GRACE_S):
                    await proc.wait()
    finally:
        # Always, even when the wait above is cancelled (the agent itself is stopping):
        # children that ignored SIGTERM, outlived the shell, or were forked while the
        # SIGTERM was being delivered are still in the group.
        _signal_group(pgid, signal.SIGKILL)
    await proc.wait()


class Bash(Tool):
    name: ClassVar[str] = "Bash"
    description: ClassVar[str] = (
        "Run a bash command in the working directory and return its output. Use for builds, tests, git and "
        "other shell work. `timeout` is in milliseconds (default 120000, at most 600000)."
    )
    input_schema: ClassVar[dict[str, Any]] = object_schema(
        {
            "command": {"type": "string", "description": "The command to run"},
            "timeout": {"type": "number", "description": "Timeout in milliseconds (max 600000)"},
            "description": {"type": "string", "description": "What the command does, in 5-10 words"},
        },
        "command",
    )
    permission_class: ClassVar[PermissionClass] = "execute"


    def target(self, tool_input: Mapping[str, Any], cwd: str) -> CallTarget:
        return CallTarget(RuleTarget("command", (str(tool_input.get("command", "")),)))

    def rule_content(self, tool_input: Mapping[str, Any], cwd: str) -> str | None:
        return str(tool_input.get("command", "")) or None

    def permission_description(self, tool_input: Mapping[str, Any], cwd: str) -> str:
        desc = tool_input.get("description")
        return desc if isinstance(desc, str) and desc else str(tool_input.get("command", ""))

    async def run(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        command = str(tool_input["command"])
        raw_timeout = tool_input.get("timeout")
        timeout_s = ctx.default_timeout_s if raw_timeout is None else float(raw_timeout) / 1000.0
        timeout_s = max(0.001, min(timeout_s, ctx.max_timeout_s))
        try:
            argv = ["/bin/bash", "-c", command]
            proc = await asyncio.create_subprocess_exec(
                *(ctx.wrap(argv) if ctx.wrap is not None else argv), cwd=ctx.cwd, env=dict(ctx.env()),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, start_new_session=True,
            )
        except OSError as exc:
            return ToolOutput.error(f"could not start bash: {exc}")
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Capture(ctx.max_output_chars), _Capture(ctx.max_output_chars)
        timed_out = False
        completed = False
        try:
            async with asyncio.TaskGroup() as tg:
                readers = [tg.create_task(out.pump(proc.stdout)), tg.create_task(err.pump(proc.stderr))]
                try:
                    async with asyncio.timeout(timeout_s):
                        await proc.wait()
                except TimeoutError:
                    timed_out = True
                    await kill_process_group(proc)
                # A background child may keep the pipes open: stop reading after a bounded wait.
                _done, pending = await asyncio.wait(readers, timeout=PIPE_DRAIN_S)
                for task in pending:
                    task.cancel()
            completed = True
        finally:
            if not completed:  # cancelled (an interrupt) or failed: nothing of the command may survive
                await kill_process_group(proc)
        stdout, stderr = out.text().rstrip("\n"), err.text().rstrip("\n")
        structured = {"stdout": stdout, "stderr": stderr, "interrupted": timed_out, "isImage": False,
                      "noOutputExpected": False}
        body = "\n".join(p for p in (stdout, stderr) if p)
        if timed_out:
            return ToolOutput(f"{body}\nCommand timed out after {timeout_s:g} s".lstrip("\n"), True, structured)
        code = proc.returncode
        if code:
            return ToolOutput(f"{body}\nExit code {code}".lstrip("\n"), True, structured)
        return ToolOutput(body, False, structured)

