"""The ``anthropic`` backend (official SDK) against the fake Messages API on loopback."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from tests.agent.harness import STREAM_ARGS, allow, asked, control, is_type, run_turn, tool_results
from tests.support.fake_anthropic import (
    FakeAnthropic,
    Reply,
    Text,
    ToolUse,
    error_reply,
    text_reply,
    tool_reply,
)

pytest.importorskip("anthropic")


def spawn(spawn_agent: Any, api: FakeAnthropic, *extra: str, key: str = "sk-test") -> Any:
    env = {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": key}
    return spawn_agent(*extra, args=STREAM_ARGS, env=env, backend=None)


def test_streaming_and_a_tool_round_trip(spawn_agent: Any, fake_api: FakeAnthropic, workdir: pathlib.Path) -> None:
    fake_api.enqueue(
        Reply([Text("Let me look.", chunk=4), ToolUse("Bash", {"command": "echo from-bash"}, chunk=7)]),
        text_reply("All done.", chunk=3),
    )
    proc = spawn(spawn_agent, fake_api, "--include-partial-messages")
    msgs, result = run_turn(proc, "do it", allow)
    events = [m["event"]["type"] for m in msgs if m.get("type") == "stream_event"]
    assert events[:3] == ["message_start", "content_block_start", "content_block_delta"]
    assert events.count("message_stop") == 2 and "ping" not in events
    partial_json = "".join(m["event"]["delta"]["partial_json"] for m in msgs if m.get("type") == "stream_event"
                           and m["event"]["type"] == "content_block_delta"
                           and m["event"]["delta"]["type"] == "input_json_delta")
    assert partial_json == '{"command": "echo from-bash"}'
    assistants = [m for m in msgs if m.get("type") == "assistant"]
    assert [a["message"]["content"][0]["type"] for a in assistants] == ["text", "tool_use", "text"]
    assert assistants[0]["request_id"].startswith("req_fake_")
    assert asked(msgs)[0]["request"]["input"] == {"command": "echo from-bash"}
    assert tool_results(msgs)[0]["content"] == "from-bash"
    assert result["subtype"] == "success" and result["result"] == "All done." and result["num_turns"] == 2
    assert result["usage"]["output_tokens"] == 10 and result["total_cost_usd"] > 0

    first, second = fake_api.message_requests()
    assert first.path == "/v1/messages" and first.body["stream"] is True
    assert first.body["model"] == "claude-sonnet-4-5" and first.body["max_tokens"] > 0
    assert sorted(t["name"] for t in first.body["tools"]) == ["Bash", "Edit", "Glob", "Grep", "LS", "Read", "Write"]
    assert str(workdir) in first.body["system"]
    assert first.headers.get("authorization") == "Bearer sk-test" or first.headers.get("x-api-key") == "sk-test"
    assert [m["role"] for m in second.body["messages"]] == ["user", "assistant", "user"]
    tool_use = second.body["messages"][1]["content"][1]
    tool_result = second.body["messages"][2]["content"][0]
    assert tool_result == {"tool_use_id": tool_use["id"], "type": "tool_result", "content": "from-bash",
                           "is_error": False}


def test_api_errors_set_model_and_key_rotation(spawn_agent: Any, workdir: pathlib.Path) -> None:
    with FakeAnthropic(api_key="right-key") as api:
        proc = spawn(spawn_agent, api, key="wrong-key")
        _, result = run_turn(proc, "hello")
        assert result["subtype"] == "error_during_execution" and result["is_error"] is True
        assert result["api_error_status"] == 401 and "API Error" in result["errors"][0]
        proc.send({"type": "update_environment_variables", "variables": {"ANTHROPIC_API_KEY": "right-key"}})
        proc.send(control("set_model", "s1", model="haiku"))
        assert proc.expect(is_type("control_response"))["response"]["response"] == {"model": "claude-haiku-4-5"}
        _, result = run_turn(proc, "hello again")
        assert result["subtype"] == "success" and result["result"] == "Hello from the fake model."
        assert api.message_requests()[-1].body["model"] == "claude-haiku-4-5"
        # the failed prompt stayed in the history: two user prompts, merged into one user turn
        assert api.message_requests()[-1].body["messages"][0]["role"] == "user"
        api.enqueue(error_reply(400, "invalid_request_error", "prompt is too long"))
        _, result = run_turn(proc, "third")
        assert result["api_error_status"] == 400 and "prompt is too long" in result["errors"][0]
        proc.close_stdin()
        assert proc.wait_exit() == 1  # the last result was an error


def test_fake_api_side_endpoints(fake_api: FakeAnthropic) -> None:
    import httpx

    r = httpx.post(fake_api.url + "/v1/messages/count_tokens", json={"messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and r.json()["input_tokens"] >= 1
    assert httpx.get(fake_api.url + "/v1/models").json()["data"][0]["type"] == "model"
    fake_api.enqueue(tool_reply("Write", {"file_path": "a", "content": "b"}, text="ok"))
    r = httpx.post(fake_api.url + "/v1/messages?beta=true", json={"model": "m", "messages": [], "max_tokens": 5})
    assert [b["type"] for b in r.json()["content"]] == ["text", "tool_use"] and r.json()["stop_reason"] == "tool_use"
    assert httpx.get(fake_api.url + "/elsewhere").status_code == 404
    assert [q.path for q in fake_api.requests][-2:] == ["/v1/messages?beta=true", "/elsewhere"]


def test_generate_session_title(spawn_agent: Any, fake_api: FakeAnthropic) -> None:
    """``generate_session_title`` (docs/protocol.md §7.3) asks the model (Haiku) and answers ``{title}``."""
    fake_api.enqueue(text_reply('"Parser refactor and tests"\n'))
    proc = spawn(spawn_agent, fake_api)
    proc.send(control("generate_session_title", "t1", description="refactor the parser\nadd tests", persist=False))
    reply = proc.expect(lambda m: m.get("type") == "control_response", what="the title")
    assert reply["response"] == {"subtype": "success", "request_id": "t1", "response": {"title": "Parser refactor and tests"}}
    request = fake_api.message_requests()[-1]
    assert request.body["model"] == "claude-haiku-4-5" and request.body["messages"][0]["content"].startswith("refactor")
    assert "tools" not in request.body or request.body["tools"] == []
