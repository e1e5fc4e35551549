"""Interrupts, end_session, dedup, keep_alive and environment updates through a real ``tether agent``."""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import pathlib
import signal
import subprocess
import sys
import termios
from typing import Any

from tests.agent.harness import (
    STREAM_ARGS,
    clean_env,
    control,
    is_type,
    processes_with,
    run_turn,
    tool_results,
    user,
    wait_until,
)

SCENARIO = """\
reply after tool
text "result: {tool_result}"

reply when LONG
tool Bash command="python3 -c 'import time; time.sleep(60)  # BG-MARK' & touch started; python3 -c 'import time; time.sleep(60)  # FG-MARK'"

reply when ENV
tool Bash command="echo $TETHER_TEST_VALUE"

reply
text "hello"
"""


def test_interrupt_kills_the_whole_process_group(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent("--permission-mode", "bypassPermissions", scenario=SCENARIO)
    proc.send(user("LONG please", "u1"))
    wait_until(lambda: (workdir / "started").exists(), what="the command to start")
    wait_until(lambda: processes_with("FG-MARK") and processes_with("BG-MARK"), what="both children")
    proc.send(control("interrupt", "int1"))
    ack = proc.expect(is_type("control_response"))
    assert ack["response"] == {"subtype": "success", "request_id": "int1", "response": {"still_queued": []}}
    results = proc.expect(lambda m: m.get("type") == "user" and bool(tool_results([m])))
    assert "stopped while running" in tool_results([results])[0]["content"]
    result = proc.result()
    assert result["subtype"] == "error_during_execution" and result["terminal_reason"] == "aborted_tools"
    assert processes_with("FG-MARK") == [] and processes_with("BG-MARK") == []
    # the session goes on
    _, result = run_turn(proc, "and now?")
    assert result["result"] == "hello"
    proc.close_stdin()
    assert proc.wait_exit() == 0


def test_interrupt_when_idle_and_unknown_control(spawn_agent: Any) -> None:
    proc = spawn_agent(scenario=SCENARIO)
    proc.send(control("interrupt", "i1"))
    assert proc.expect(is_type("control_response"))["response"]["subtype"] == "success"
    proc.send(control("bogus_subtype", "b1"))
    err = proc.expect(is_type("control_response"))["response"]
    assert err == {"subtype": "error", "request_id": "b1", "error": "Unsupported control request subtype: bogus_subtype",
                   "error_code": "unsupported_request"}
    proc.send(control("set_model", "s1", model="opus"))
    assert proc.expect(is_type("control_response"))["response"]["response"] == {"model": "claude-opus-4-1"}
    proc.send(control("mcp_status", "m1"))
    assert proc.expect(is_type("control_response"))["response"]["response"] == {"mcpServers": []}
    proc.send(control("generate_session_title", "g1", description="anything"))  # no model to ask: a clear no
    assert proc.expect(is_type("control_response"))["response"] == {
        "subtype": "error", "request_id": "g1",
        "error": "generate_session_title: the scripted backend cannot write titles"}
    msgs, _ = run_turn(proc, "hi")
    assert next(m for m in msgs if m.get("type") == "assistant")["message"]["model"] == "claude-opus-4-1"
    proc.close_stdin()
    assert proc.wait_exit() == 0
    assert proc.stderr == ""


def test_end_session_stops_the_turn_and_exits(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent("--permission-mode", "bypassPermissions", scenario=SCENARIO)
    proc.send(user("LONG please"))
    wait_until(lambda: (workdir / "started").exists(), what="the command to start")
    proc.send(user("queued, never run", "q1"))
    proc.send(control("end_session", "e1"))
    assert proc.expect(is_type("control_response"))["response"]["request_id"] == "e1"
    assert proc.result()["terminal_reason"] == "aborted_tools"
    assert proc.wait_exit() == 0
    assert not [m for m in proc.messages if m.get("uuid") == "q1"]
    wait_until(lambda: not processes_with("FG-MARK"), 5, "the command to be gone")


def test_sigterm_aborts_the_turn_and_kills_the_command(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent("--permission-mode", "bypassPermissions", scenario=SCENARIO)
    proc.send(user("LONG please"))
    wait_until(lambda: (workdir / "started").exists(), what="the command to start")
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.wait_exit() == 128 + signal.SIGTERM
    assert proc.messages[-1]["type"] == "result" and proc.messages[-1]["terminal_reason"] == "aborted_tools"
    wait_until(lambda: not processes_with("FG-MARK") and not processes_with("BG-MARK"), 5, "the command to be gone")


def test_dedup_keep_alive_and_environment(spawn_agent: Any) -> None:
    proc = spawn_agent("--permission-mode", "bypassPermissions", scenario=SCENARIO)
    proc.send({"type": "keep_alive"})
    proc.send({"type": "update_environment_variables", "variables": {"TETHER_TEST_VALUE": "rotated-42"}})
    msgs, result = run_turn(proc, "ENV please", uuid="u-env")
    assert result["result"] == "result: rotated-42"
    echo = [m for m in msgs if m.get("isReplay")]
    assert len(echo) == 1 and echo[0]["uuid"] == "u-env" and echo[0]["session_id"] == result["session_id"]
    # a re-delivered message is acknowledged again but not processed again
    proc.send(user("ENV please", "u-env"))
    again = proc.expect(lambda m: m.get("isReplay") is True)
    assert again["uuid"] == "u-env"
    # two copies sent back to back: one turn, one echo
    proc.send(user("hi", "u-2"))
    proc.send(user("hi", "u-2"))
    proc.result()
    proc.close_stdin()
    assert proc.wait_exit() == 0
    assert sum(1 for m in proc.messages if m.get("type") == "result") == 2
    assert sum(1 for m in proc.messages if m.get("uuid") == "u-2") == 1


def test_stdin_closing_while_asking_cancels_the_request(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent(scenario="reply after tool\ntext done\nreply\ntool Bash command=ls\n")
    proc.send(user("go"))
    request = proc.expect(is_type("control_request", "can_use_tool"))
    proc.close_stdin()
    assert proc.expect(is_type("control_cancel_request"))["request_id"] == request["request_id"]
    assert proc.result()["subtype"] == "success"
    assert proc.wait_exit() == 0


def test_a_slow_reader_loses_nothing(tmp_path: pathlib.Path, workdir: pathlib.Path) -> None:
    """The host stops reading: the agent must not exit while output is still buffered.

    One turn writes about 120 KB: 64 KB fill the pipe, the rest waits in the agent.
    The agent may only exit once that rest reached the pipe, i.e. after we read.
    """
    scenario = tmp_path / "big.txt"
    big = "tool Bash command=\"head -c 30000 /dev/zero | tr '\\\\0' a\"\n"
    scenario.write_text(f'reply after tool\ntext "done"\nreply\n{big}{big}')
    proc = subprocess.Popen(
        [sys.executable, "-m", "tether.cli.main", "agent", *STREAM_ARGS, "--permission-mode", "bypassPermissions",
         "--backend", "scripted", "--scenario", str(scenario)],
        cwd=workdir, env=clean_env(tmp_path), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps(user("go", "u1")) + "\n").encode())
        proc.stdin.close()
        fd = proc.stdout.fileno()
        wait_until(lambda: _pipe_bytes(fd) >= 60_000 or proc.poll() is not None, what="the pipe to fill up")
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(1.5)  # a faulty agent exits here, dropping what it had not written yet
        out = proc.stdout.read()
        proc.wait(30)
        err = proc.stderr.read() if proc.stderr is not None else b""
    finally:
        if proc.poll() is None:
            proc.kill()
        with proc:  # closes the pipes and waits
            pass
    assert proc.returncode == 0, err
    messages = [json.loads(line) for line in out.splitlines()]
    assert len(out) > 100_000
    assert [m["result"] for m in messages if m["type"] == "result"] == ["done"]


def _pipe_bytes(fd: int) -> int:
    buf = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, buf)
    return buf[0]
