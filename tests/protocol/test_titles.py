from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import titles as t
from tether.protocol.messages import user_message


def test_plain_user_message() -> None:
    assert t.derive_title(user_message("  Fix the\n\tlogin   bug  ", "u")) == "Fix the login bug"


def test_text_blocks_are_joined_and_images_ignored() -> None:
    msg = user_message(
        [
            {"type": "image", "source": {}},
            {"type": "text", "text": "Look at"},
            {"type": "text", "text": "this"},
        ],
        "u",
    )
    assert t.derive_title(msg) == "Look at this"


def test_blocks_that_are_not_objects_are_skipped() -> None:
    msg = {"type": "user", "message": {"role": "user", "content": ["stray", {"type": "text", "text": "Fix it"}]}}
    assert t.derive_title(msg) == "Fix it"


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "assistant", "message": {"content": "hi"}},
        {**user_message("hi", "u"), "isSynthetic": True},
        {**user_message("hi", "u"), "isMeta": True},
        {**user_message("summary", "u"), "isCompactSummary": True},
        {**user_message("hi", "u"), "tool_use_result": {"stdout": ""}},
        user_message("sub-agent prompt", "u", parent_tool_use_id="toolu_1"),
        user_message([{"type": "tool_result", "tool_use_id": "x", "content": "ok"}], "u"),
        user_message("   \n ", "u"),
        user_message("/clear", "u"),
        user_message("/compact keep the API notes", "u"),
        user_message("[Request interrupted by user for tool use]", "u"),
        user_message("<command-name>/cost</command-name>", "u"),
        user_message("<system-reminder>internal</system-reminder>", "u"),
        {"type": "user", "message": "not an object"},
        {"type": "user", "message": {"content": 42}},
        {"type": "user", "message": {"content": [{"type": "image"}]}},
        {"type": "user", "message": {"content": ["bare string", {"type": "text", "text": 3}]}},
    ],
)
def test_not_title_worthy(msg: dict[str, Any]) -> None:
    assert t.derive_title(msg) is None


def test_paths_are_not_slash_commands() -> None:
    assert t.derive_title(user_message("/usr/bin/env is broken", "u")) == "/usr/bin/env is broken"


def test_hidden_blocks_are_stripped() -> None:
    msg = user_message("<system-reminder>x\ny</system-reminder>Refactor the parser", "u")
    assert t.derive_title(msg) == "Refactor the parser"


def test_truncates_on_word_boundary() -> None:
    text = "word " * 40
    title = t.title_from_text(text)
    assert title is not None
    assert len(title) <= 80 and title.endswith("…")
    assert title == ("word " * 16).strip() + "…"


def test_a_cut_inside_a_word_goes_back_to_the_last_space() -> None:
    assert t.title_from_text("a" * 50 + " " + "b" * 100) == "a" * 50 + "…"
    assert t.title_from_text("a" * 45 + ", " + "b" * 100) == "a" * 45 + "…", "no trailing punctuation"


def test_truncates_mid_word_when_no_boundary_or_only_a_far_one() -> None:
    assert t.title_from_text("x" * 200) == "x" * 79 + "…"
    assert t.title_from_text("a" * 10 + " " + "b" * 200) == "a" * 10 + " " + "b" * 68 + "…"


def test_exact_fit_is_untouched() -> None:
    assert t.title_from_text("a" * 80) == "a" * 80


def test_first_sentence_and_short_limit() -> None:
    assert t.title_from_text("Fix it. Then ship it.", max_len=50, first_sentence=True) == "Fix it."
    with pytest.raises(ValueError):
        t.title_from_text("x", max_len=1)


@settings(deadline=None)
@given(st.text(), st.integers(min_value=2, max_value=120))
def test_titles_are_short_single_line_and_trimmed(text: str, max_len: int) -> None:
    title = t.title_from_text(text, max_len)
    if title is None:
        return
    assert 0 < len(title) <= max_len
    assert "\n" not in title and "\t" not in title and "  " not in title
    assert title == title.strip()


def test_title_state_precedence() -> None:
    s = t.TitleState()
    s = s.observe(user_message("/clear", "a"))
    assert s.title is None and s.worthy_messages == 0
    s = s.observe(user_message("first real prompt", "b"))
    assert s.title == "first real prompt" and not s.explicit and s.worthy_messages == 1
    s = s.observe(user_message("second prompt", "c"))
    assert s.title == "first real prompt" and s.worthy_messages == 2
    s = s.replace_derived("A better title")
    assert s.title == "A better title"
    s = s.set_explicit("Mine")
    assert s.title == "Mine" and s.explicit
    s = s.replace_derived("generated").offer_derived("other").observe(user_message("third", "d"))
    assert s.title == "Mine" and s.worthy_messages == 3
    assert s.set_explicit("Renamed").title == "Renamed"


def test_explicit_before_any_message() -> None:
    s = t.TitleState(title="server title", explicit=True)
    assert s.observe(user_message("hello", "u")).title == "server title"


@settings(deadline=None)
@given(st.text())
def test_a_title_worthy_text_always_has_a_first_sentence_title(text: str) -> None:
    # ReplTitles.start relies on this: the latest worthy prompt always names the session
    if t.title_from_text(text):
        assert t.title_from_text(text, t.INITIAL_TITLE_LEN, first_sentence=True)
