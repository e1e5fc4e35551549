"""What `tether claude` prints while the session runs headless: the turn's end in words for a person."""

from __future__ import annotations

from tether.claude.console import output_lines


def test_a_stopped_turn_never_shows_the_stock_clis_diagnostic() -> None:
    stopped = {"type": "result", "subtype": "error_during_execution", "is_error": True,
               "terminal_reason": "aborted_tools", "errors": ["[ede_diagnostic] result_type=user stop_reason=tool_use"]}
    [line] = output_lines(stopped)
    assert "the turn ended: Interrupted" in line and "ede_diagnostic" not in line
    [failed] = output_lines({"type": "result", "subtype": "error_max_turns", "is_error": True, "errors": []})
    assert "the turn ended: error_max_turns" in failed
    assert output_lines({"type": "result", "subtype": "success", "is_error": False}) == ["\x1b[2m  ✓ done\x1b[0m"]
