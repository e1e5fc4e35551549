"""``tether agent`` against the stock CLI's recorded conversations (tests/fixtures/claude-cli).

Each recorded conversation is replayed into a real ``tether agent``: a stdin line is
written once the agent has printed as many lines as the CLI had printed before it
(answers to ``can_use_tool`` get our request id and input). Then the sequence of
message kinds must be the CLI's, each message must carry the fields every recorded
CLI version writes (same JSON types), and the exit code must match.
"""

from __future__ import annotations

import copy
import pathlib
from typing import Any

import pytest

from tests.agent import conformance as cf
from tests.agent.harness import AgentProc, processes_with, wait_until

# The fake model the fixtures were recorded with, as a scripted scenario (see tests/support/fake_anthropic.py).
FIXTURE_MODEL = """\
reply after tool
text "Tool said: TOOL_RESULT:{tool_result}"

reply when TOOLBASH
tool Bash command="touch from_bash.txt && echo hi" description="Create a file and print hi"

reply when TOOLWRITE
tool Write file_path=hello.txt content="hello from fake model\\n"

reply when SLEEPTOOL
tool Bash command="touch sleep.started && python3 -c 'import time; time.sleep(30); print(1)  # SLEEPTOOL-MARK'" description="Long running command"

reply when SLOW
chunk 5
text "tick "
more "tick "
pause 30
more "tick tick tick "

reply
chunk 13
text Hello from the fake model.
"""

FIXTURES = [
    "plain_text.jsonl",
    "plain_text_with_initialize.jsonl",
    "tool_use_allow.jsonl",
    "tool_use_allow_write.jsonl",
    "tool_use_deny.jsonl",
    "tool_use_deny_with_interrupt.jsonl",
    "tool_use_without_prompt_tool.jsonl",
    "tool_use_allow_no_initialize_replay.jsonl",
    "tool_use_allow_sdk_env.jsonl",
    "interrupt_while_streaming.jsonl",
    "interrupt_while_tool_runs.jsonl",
    "interrupt_while_permission_pending.jsonl",
    "control_requests_misc.jsonl",
]
ENV = {"tool_use_allow_sdk_env.jsonl": {"CLAUDE_CODE_ENTRYPOINT": "sdk-py", "CLAUDE_CODE_SDK_READS_SESSION_STATE": "1"}}


@pytest.fixture(scope="module")
def common() -> dict[str, dict[str, set[str]]]:
    return cf.common_fields()


def _substitute(value: Any, cwd: str) -> Any:
    if isinstance(value, str):
        return value.replace("<cwd>", cwd)
    if isinstance(value, list):
        return [_substitute(v, cwd) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, cwd) for k, v in value.items()}
    return value


def _our_stdin(msg: dict[str, Any], proc: AgentProc) -> dict[str, Any]:
    """The recorded stdin line, adapted: answers go to our latest can_use_tool with our input."""
    msg = _substitute(copy.deepcopy(msg), str(proc.cwd))
    if msg.get("type") == "control_response":
        asked = [m for m in proc.messages if m.get("type") == "control_request"
                 and m["request"].get("subtype") == "can_use_tool"]
        assert asked, "the recording answers a can_use_tool that we never sent"
        msg["response"]["request_id"] = asked[-1]["request_id"]
        if "updatedInput" in msg["response"].get("response", {}):
            msg["response"]["response"]["updatedInput"] = asked[-1]["request"]["input"]
    return msg


def replay(name: str, proc: AgentProc, workdir: pathlib.Path, version_dir: str = "") -> list[dict[str, Any]]:
    records = cf.load(name, version_dir)
    printed = 0
    for rec in records:
        if rec.dir == "stdout":
            printed += 1
        elif rec.dir == "stdin":
            proc.wait_count(printed)
            msg = rec.msg
            if name == "interrupt_while_tool_runs.jsonl" and msg.get("request", {}).get("subtype") == "interrupt":
                # the recording waited 3 s; we wait until the command has really started
                wait_until(lambda: (workdir / "sleep.started").exists(), what="the long tool to start")
            proc.send(_our_stdin(msg, proc))
    proc.wait_count(printed)
    proc.close_stdin()
    return [r.msg for r in records if r.dir == "stdout"]


def argv_of(name: str, version_dir: str = "") -> list[str]:
    note = cf.load(name, version_dir)[0]
    assert note.dir == "note"
    return list(note.msg["argv"][1:])


def without_closing_events(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """2.1.330 closes an interrupted message with stream events; 2.1.197 did not (we follow 2.1.330)."""
    out, closing = [], False
    for m in messages:
        if m.get("type") == "user" and "[Request interrupted by user]" in str(m["message"]["content"]):
            closing = True
        elif m.get("type") == "result":
            closing = False
        elif closing and m.get("type") == "stream_event":
            continue
        out.append(m)
    return out


def check_conformance(name: str, proc: AgentProc, workdir: pathlib.Path, common: dict[str, Any],
                      version_dir: str = "") -> list[dict[str, Any]]:
    records = cf.load(name, version_dir)
    theirs = replay(name, proc, workdir, version_dir)
    code = proc.wait_exit()
    answered = cf.answered_subtypes(records)
    ours = without_closing_events(proc.messages) if version_dir else list(proc.messages)
    ours_kinds = [cf.kind(m, answered) for m in ours]
    assert ours_kinds == cf.stdout_kinds(records), f"stderr:\n{proc.stderr}"
    problems = [p for f, o, k in zip(theirs, ours, ours_kinds, strict=True) for p in cf.shape_problems(f, o, k, common)]
    assert problems == []
    expected_exit = next(r.msg["returncode"] for r in records if r.dir == "exit")
    assert code == expected_exit, proc.stderr
    assert proc.bad_lines == []
    return ours


@pytest.mark.parametrize("name", FIXTURES)
def test_scripted_backend_matches_the_cli(name: str, spawn_agent: Any, workdir: pathlib.Path,
                                          common: dict[str, Any]) -> None:
    proc = spawn_agent(*argv_of(name), scenario=FIXTURE_MODEL, args=[], env=ENV.get(name))
    ours = check_conformance(name, proc, workdir, common)
    if name == "interrupt_while_tool_runs.jsonl":
        # the interrupt killed the whole process group of the command
        wait_until(lambda: not processes_with("SLEEPTOOL-MARK"), 5, "the killed command to be gone")
    if name in ("tool_use_allow.jsonl", "tool_use_allow_no_initialize_replay.jsonl"):
        assert (workdir / "from_bash.txt").exists()
    if name == "tool_use_deny.jsonl":
        assert not (workdir / "from_bash.txt").exists()
    if name == "tool_use_allow_write.jsonl":
        assert (workdir / "hello.txt").read_text() == "hello from fake model\n"
    assert all(m.get("session_id") == ours[-1]["session_id"] for m in ours if "session_id" in m)


@pytest.mark.parametrize("name", ["interrupt_while_streaming.jsonl"])
def test_recordings_of_cli_2_1_197(name: str, spawn_agent: Any, workdir: pathlib.Path,
                                   common: dict[str, Any]) -> None:
    version = "v2.1.197"
    proc = spawn_agent(*argv_of(name, version), scenario=FIXTURE_MODEL, args=[])
    check_conformance(name, proc, workdir, common, version)


@pytest.mark.parametrize("name", ["interrupt_while_streaming.jsonl"])
def test_anthropic_backend_matches_the_cli(name: str, spawn_agent: Any, workdir: pathlib.Path,
                                           common: dict[str, Any], fake_api: Any) -> None:
    pytest.importorskip("anthropic")
    env = {"ANTHROPIC_BASE_URL": fake_api.url, "ANTHROPIC_API_KEY": "sk-test"}
    proc = spawn_agent(*argv_of(name), args=[], env=env, backend=None)
    check_conformance(name, proc, workdir, common)
    requests = fake_api.message_requests()
    assert requests and all(r.body["stream"] is True for r in requests)
    if name == "interrupt_while_streaming.jsonl":
        assert requests[0].completed is False  # the interrupt closed the HTTP stream
