"""What the REPL prints for the messages of a conversation (rendered to text)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console, RenderableType

from tether.protocol.messages import control_request, user_message
from tether.repl import render


def text(*items: RenderableType) -> str:
    console = Console(width=100, record=True, color_system=None, file=io.StringIO())
    for item in items:
        console.print(item)
    return console.export_text()


def assistant(*blocks: dict[str, Any]) -> dict[str, Any]:
    return {"type": "assistant", "uuid": "a", "message": {"role": "assistant", "content": list(blocks)}}


def test_markdown_and_tool_cards() -> None:
    out = text(*render.assistant(assistant(
        {"type": "text", "text": "Here is **the** plan:\n\n- one\n- two"},
        {"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "pytest -q"}},
        {"type": "tool_use", "id": "t2", "name": "Edit",
         "input": {"file_path": "/work/p/src/app.py", "old_string": "x = 1\n", "new_string": "x = 2\n"}},
        {"type": "tool_use", "id": "t3", "name": "Write", "input": {"file_path": "/work/p/a.txt", "content": "hi\n"}},
    ), "/work/p"))
    assert "Here is the plan:" in out and "• one" in out
    assert "⏺ Running pytest -q" in out and "$ pytest -q" in out
    assert "⏺ Editing src/app.py" in out and "-x = 1" in out and "+x = 2" in out
    assert "⏺ Writing a.txt" in out and "hi" in out


def test_tool_results_are_short_and_errors_marked() -> None:
    msg = user_message([{"type": "tool_result", "tool_use_id": "t", "content": "\n".join(f"l{i}" for i in range(20))}], "u")
    out = text(*render.tool_results(msg))
    assert "⎿ l0" in out and "l5" in out and "l6" not in out and "… (+14 lines)" in out


def test_turn_end() -> None:
    assert "✓ 1.5 s · $0.0123" in text(render.turn_end({"subtype": "success", "duration_ms": 1500,
                                                          "total_cost_usd": 0.0123}))
    stopped = {"subtype": "error_during_execution", "is_error": True, "terminal_reason": "aborted_tools",
               "duration_ms": 200, "errors": []}
    assert "✗ interrupted · 0.2 s" in text(render.turn_end(stopped))
    # the stock CLI's interrupted result carries an internal diagnostic: never shown
    claude_stopped = {**stopped, "errors": ["[ede_diagnostic] result_type=user last_content_type=n/a"]}
    assert text(render.turn_end(claude_stopped)).strip() == "✗ interrupted · 0.2 s"
    failed = {"subtype": "error_during_execution", "is_error": True, "duration_ms": 0, "errors": ["API down"]}
    assert "✗ failed: API down" in text(render.turn_end(failed))


def test_permission_card_and_remote_prompt() -> None:
    ask = control_request("can_use_tool", "r", tool_name="Bash", input={"command": "rm -rf build"},
                          description="Remove the build folder")
    out = text(render.permission_card(ask, None))
    assert "? Allow Bash: Remove the build folder" in out and "$ rm -rf build" in out
    assert render.ANSWER_HINT in out
    assert text(render.remote_prompt(user_message("from my phone", "u"))).strip() == "remote ❯ from my phone"
    help_text = text(render.help_table())
    assert "/remote-control [name] [--mirror] (/rc)" in help_text and "Ctrl-C" in help_text
