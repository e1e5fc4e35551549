"""The chaos audit's notion of an answered prompt (bench/chaoslib/turns.py): a turn on that very
prompt ends in a result; a result after a cut turn, or after another prompt's turn, does not count."""

from __future__ import annotations

from bench.chaoslib import turns

P1, P2 = turns.prompt_text(1, "session_x"), turns.prompt_text(2, "session_x")


def said(text: str) -> dict[str, object]:
    return {"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": text}]}}


def test_a_turn_on_the_prompt_that_ends_in_a_result_answers_it() -> None:
    assert turns.answered({5: P1, 9: None}, P1)
    assert not turns.answered({5: P1}, P1), "still running"
    assert not turns.answered({}, P1)


def test_a_cut_turn_is_not_answered_by_the_next_prompts_result() -> None:
    cut = {5: P1, 8: P2, 12: None}  # the agent running P1 was killed; the next one ran P2
    assert turns.answered(cut, P2) and not turns.answered(cut, P1)
    assert turns.answered({5: P1, 8: P1, 12: None, 14: P2, 19: None}, P1), "run again and finished"


def test_markers_come_from_the_scripted_models_first_words_and_results() -> None:
    assert turns.marker(said(f"Working on: {P1}. Streaming a few tokens")) == (True, P1)
    assert turns.marker({"type": "result", "subtype": "success"}) == (True, None)
    assert turns.marker(said("The tool answered: done")) == (False, None)
    assert turns.marker({"type": "user", "message": {"role": "user", "content": P1}}) == (False, None)
    assert turns.marker({"type": "assistant", "message": {"content": [{"type": "tool_use"}]}}) == (False, None)
    assert turns.prompt_text(10, "session_x") != P1 and not turns.answered({1: turns.prompt_text(10, "session_x"),
                                                                           2: None}, P1)
