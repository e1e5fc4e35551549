"""Scenario files of the scripted backend (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tether.agent.scenario import (
    DEFAULT_SCENARIO,
    Emit,
    Fail,
    ScenarioError,
    ScriptedModel,
    Wait,
    parse_scenario,
)
from tether.agent.stream import MessageAccumulator


def prompt(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


def after_tool(result: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "X", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": result}]}]


def play(model: ScriptedModel, messages: list[dict[str, Any]]) -> tuple[MessageAccumulator, list[Any]]:
    acc = MessageAccumulator()
    actions = model.play(messages, "m", 5)
    for a in actions:
        if isinstance(a, Emit):
            acc.feed(a.event)
    return acc, actions


def test_the_default_scenario_asks_for_a_tool_then_reports() -> None:
    model = ScriptedModel(parse_scenario(DEFAULT_SCENARIO))
    acc, _ = play(model, prompt("hello"))
    blocks = acc.content()
    assert [b["type"] for b in blocks] == ["text", "tool_use"] and blocks[1]["name"] == "Write"
    assert acc.stop_reason == "tool_use"
    acc, _ = play(model, after_tool("File created"))
    assert "File created" in acc.content()[0]["text"] and acc.stop_reason == "end_turn"
    acc, _ = play(model, prompt("again"))  # it loops
    assert acc.content()[1]["name"] == "Write"


def test_directives() -> None:
    text = r"""
# a comment
reply when SLOW
chunk 3
delay 0.5
text "ab cd"
pause 2
more \nxy
tool Bash command="echo 'hi there'" timeout:=1500 flag:=true note='say "x"'
stop max_tokens
"""
    model = ScriptedModel(parse_scenario(text))
    acc, actions = play(model, prompt("be slow"))
    assert acc.content()[0]["text"] == "ab cd\nxy"
    assert acc.content()[1]["input"] == {"command": "echo 'hi there'", "timeout": 1500, "flag": True,
                                         "note": 'say "x"'}
    assert acc.stop_reason == "max_tokens"
    waits = [a.seconds for a in actions if isinstance(a, Wait)]
    assert 2 in waits and waits.count(0.5) >= 4
    deltas = [a.event["delta"]["text"] for a in actions if isinstance(a, Emit)
              and a.event["type"] == "content_block_delta" and a.event["delta"]["type"] == "text_delta"]
    assert deltas[:2] == ["ab ", "cd"]


def test_choice_groups_play_in_turn_and_the_last_repeats() -> None:
    model = ScriptedModel(parse_scenario("reply\ntext one\nreply\ntext two\nreply after tool\ntext tool"))
    texts = [play(model, prompt("x"))[0].content()[0]["text"] for _ in range(3)]
    assert texts == ["one", "two", "two"]
    assert play(model, after_tool("r"))[0].content()[0]["text"] == "two"  # the first matching trigger decides


def test_keywords_and_placeholders() -> None:
    model = ScriptedModel(parse_scenario(
        'reply after tool\ntext "got {tool_result}"\nreply when BASH\ntool Bash command=ls\nreply\ntext echo {prompt}'))
    assert play(model, prompt("run BASH"))[0].content()[0]["name"] == "Bash"
    assert play(model, after_tool("a.txt"))[0].content()[0]["text"] == "got a.txt"
    assert play(model, prompt("hi"))[0].content()[0]["text"] == "echo hi"


def test_fail_and_no_match() -> None:
    model = ScriptedModel(parse_scenario("reply when X\ntext partial\nfail 529 Overloaded"))
    _, actions = play(model, prompt("X"))
    assert isinstance(actions[-1], Fail) and actions[-1].status == 529
    acc, _ = play(model, prompt("nothing"))
    assert "no reply" in acc.content()[0]["text"]


@pytest.mark.parametrize("text", [
    "text before reply", "reply\nbogus x", "reply sometimes", "reply\nchunk zero", "reply\ndelay -1",
    "reply\ntool", "reply\ntool Bash novalue", "reply\ntool Bash x:={}", "reply\nfail abc", "# only comments",
    "reply\ntool Bash 'unclosed",
])
def test_malformed_scenarios(text: str) -> None:
    with pytest.raises(ScenarioError):
        parse_scenario(text)


def test_tool_input_is_json() -> None:
    model = ScriptedModel(parse_scenario("reply\nchunk 4\ntool Write file_path=a content=\"x\\ny\""))
    _, actions = play(model, prompt("go"))
    raw = "".join(a.event["delta"]["partial_json"] for a in actions if isinstance(a, Emit)
                  and a.event["type"] == "content_block_delta")
    assert json.loads(raw) == {"file_path": "a", "content": "x\ny"}
