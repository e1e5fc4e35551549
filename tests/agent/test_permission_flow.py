"""Permission modes, rules and answers, end to end through a real ``tether agent``."""

from __future__ import annotations

import pathlib
from typing import Any

from tests.agent.harness import allow, asked, control, deny, is_type, run_turn, tool_results

SCENARIO = """\
reply after tool
text "result: {tool_result}"

reply when READ
tool Read file_path=seed.txt

reply when WRITE
tool Write file_path=out.txt content=written

reply when BASH
tool Bash command="echo ran > bash.out; echo hi" description="Write bash.out"

reply when OTHER
tool Bash command="echo other"

reply when TWO
tool Bash command="echo one"
tool Bash command="echo two"

reply
text hello
"""


def test_default_mode(spawn_agent: Any, workdir: pathlib.Path) -> None:
    (workdir / "seed.txt").write_text("seed content\n")
    proc = spawn_agent(scenario=SCENARIO)
    msgs, result = run_turn(proc, "READ it")
    assert asked(msgs) == [] and "seed content" in result["result"]
    assert tool_results(msgs)[0]["is_error"] is False
    msgs, result = run_turn(proc, "WRITE it", allow)
    request = asked(msgs)[0]["request"]
    assert request["tool_name"] == "Write" and request["description"] == "out.txt"
    assert request["title"] == "Writing out.txt" and request["tool_use_id"].startswith("toolu_")
    assert request["permission_suggestions"] == [{"type": "setMode", "mode": "acceptEdits", "destination": "session"}]
    assert (workdir / "out.txt").read_text() == "written"
    msgs, result = run_turn(proc, "BASH it", lambda m: deny(m, "not today"))
    assert tool_results(msgs)[0] == {"type": "tool_result", "content": "not today", "is_error": True,
                                     "tool_use_id": asked(msgs)[0]["request"]["tool_use_id"]}
    assert result["subtype"] == "success" and len(result["permission_denials"]) == 1
    assert not (workdir / "bash.out").exists()
    proc.close_stdin()
    assert proc.wait_exit() == 0


def test_accept_edits_and_bypass(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent("--permission-mode", "acceptEdits", scenario=SCENARIO)
    msgs, _ = run_turn(proc, "WRITE it")
    assert asked(msgs) == [] and (workdir / "out.txt").exists()
    msgs, _ = run_turn(proc, "BASH it", allow)
    assert len(asked(msgs)) == 1
    proc.send(control("set_permission_mode", "m1", mode="bypassPermissions"))
    assert proc.expect(is_type("control_response"))["response"]["response"] == {"mode": "bypassPermissions"}
    assert proc.expect(is_type("system", "status"))["permissionMode"] == "bypassPermissions"
    msgs, _ = run_turn(proc, "BASH again")
    assert asked(msgs) == [] and (workdir / "bash.out").exists()
    init = next(m for m in msgs if m.get("subtype") == "init")
    assert init["permissionMode"] == "bypassPermissions"
    proc.send(control("set_permission_mode", "m2", mode="yolo"))
    assert proc.expect(is_type("control_response"))["response"]["subtype"] == "error"


def test_plan_and_dont_ask(spawn_agent: Any, workdir: pathlib.Path) -> None:
    (workdir / "seed.txt").write_text("seed\n")
    proc = spawn_agent("--permission-mode", "plan", scenario=SCENARIO)
    msgs, result = run_turn(proc, "WRITE it")
    assert asked(msgs) == [] and not (workdir / "out.txt").exists()
    assert "plan mode" in tool_results(msgs)[0]["content"] and result["permission_denials"]
    msgs, _ = run_turn(proc, "READ it")
    assert tool_results(msgs)[0]["is_error"] is False
    proc.close_stdin()
    proc.wait_exit()

    proc = spawn_agent("--permission-mode", "dontAsk", "--allowedTools", "Bash(echo other)", scenario=SCENARIO)
    msgs, _ = run_turn(proc, "BASH it")
    assert asked(msgs) == [] and "dontAsk" in tool_results(msgs)[0]["content"]
    msgs, result = run_turn(proc, "OTHER")
    assert asked(msgs) == [] and result["result"] == "result: other"


def test_updated_permissions_and_updated_input(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent("--disallowedTools", "Read", scenario=SCENARIO)
    (workdir / "seed.txt").write_text("seed\n")
    msgs, _ = run_turn(proc, "READ it")
    assert asked(msgs) == [] and "denied by the rule Read" in tool_results(msgs)[0]["content"]

    def always(m: dict[str, Any]) -> dict[str, Any]:
        return allow(m, updated_input={}, updatedPermissions=m["request"]["permission_suggestions"])

    msgs, result = run_turn(proc, "OTHER", always)
    assert len(asked(msgs)) == 1 and result["result"] == "result: other"
    meta = next(m for m in msgs if m.get("tool_result_meta"))["tool_result_meta"][0]
    assert meta["permission_decision"] == {"decision": "accept", "source": "user_permanent"}
    msgs, _ = run_turn(proc, "OTHER again")  # the session rule answers now
    assert asked(msgs) == []
    msgs, result = run_turn(proc, "BASH but edited",
                            lambda m: allow(m, {"command": "echo edited", "description": "x"}))
    assert len(asked(msgs)) == 1 and result["result"] == "result: edited"
    assert not (workdir / "bash.out").exists()
    msgs, _ = run_turn(proc, "WRITE", lambda m: allow(m, updated_input={}, updatedPermissions=[
        {"type": "setMode", "mode": "acceptEdits", "destination": "session"}]))
    assert proc.messages and any(m.get("subtype") == "status" and m.get("permissionMode") == "acceptEdits"
                                 for m in msgs)


def test_mode_change_settles_a_pending_request(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent(scenario=SCENARIO)
    proc.send({"type": "user", "message": {"role": "user", "content": "WRITE it"}})
    request = proc.expect(is_type("control_request", "can_use_tool"))
    proc.send(control("initialize", "i1"))
    reply = proc.expect(is_type("control_response"))["response"]
    assert reply["subtype"] == "success" and reply["pending_permission_requests"][0]["request_id"] == request["request_id"]
    proc.send(control("initialize", "i2"))
    again = proc.expect(is_type("control_response"))["response"]
    assert again["subtype"] == "error" and again["error"] == "Already initialized"
    assert again["pending_permission_requests"][0]["request_id"] == request["request_id"]
    proc.send(control("set_permission_mode", "m1", mode="acceptEdits"))
    cancel = proc.expect(is_type("control_cancel_request"))
    assert cancel["request_id"] == request["request_id"]
    result = proc.result()
    assert result["subtype"] == "success" and (workdir / "out.txt").exists()
    proc.send(allow(request))  # a late answer changes nothing
    msgs, result = run_turn(proc, "say hi")
    assert result["result"] == "hello"


def test_two_tool_calls_in_one_message(spawn_agent: Any, workdir: pathlib.Path) -> None:
    proc = spawn_agent("--permission-mode", "bypassPermissions", scenario=SCENARIO)
    msgs, result = run_turn(proc, "TWO")
    assert [r["content"] for r in tool_results(msgs)] == ["one", "two"]
    assert result["num_turns"] == 2
