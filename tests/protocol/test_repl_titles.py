"""The REPL bridge's title rules (docs/protocol.md §12.8): initial precedence, a placeholder from the first
prompt, a regenerated title at the third, and a title a person chose is never replaced."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.messages import user_message
from tether.protocol.titles import ReplTitles, TitleUpdate, slug_title, summary_title


def prompt(text: str) -> dict[str, object]:
    return user_message(text, "u")


def test_initial_title_precedence() -> None:
    history = [prompt("Fix the login bug. It fails on Safari."), prompt("/cost"), prompt("Now add a test for it!")]
    assert ReplTitles.start(explicit="Mine", renamed="Renamed", messages=history, slug_words=["a"]).title == "Mine"
    t = ReplTitles.start(explicit=None, renamed="Renamed", messages=history, slug_words=["a"])
    assert t.title == "Renamed" and t.explicit
    t = ReplTitles.start(explicit=None, renamed=None, messages=history, slug_words=["a"])
    assert t.title == "Now add a test for it!" and not t.explicit  # the last meaningful prompt
    long = ReplTitles.start(explicit=None, renamed=None, messages=[prompt("word " * 40)], slug_words=[])
    assert long.title is not None and len(long.title) <= 50 and long.title.endswith("…")
    t = ReplTitles.start(explicit=None, renamed=None, messages=[], slug_words=["quiet", "River"])
    assert t.title == "remote-control-quiet-river" and t.from_slug


def test_placeholder_then_regenerated_at_the_third_prompt() -> None:
    t = ReplTitles.start(explicit=None, renamed=None, messages=[], slug_words=["x"])
    assert t.observe(prompt("Refactor the parser. Keep the API.")) == TitleUpdate("placeholder", "Refactor the parser.")
    assert t.observe({"type": "assistant", "message": {"content": "ok"}}) is None
    assert t.observe(prompt("/help")) is None  # not title-worthy
    assert t.observe(prompt("parser tests please")) is None
    update = t.observe(prompt("and the parser docs"))
    assert update == TitleUpdate("regenerate", "Refactor parser Keep API tests docs")
    assert t.observe(prompt("fourth")) is None  # once
    assert t.generated("Parser refactor") and t.title == "Parser refactor"


def test_an_explicit_title_is_never_replaced() -> None:
    t = ReplTitles.start(explicit="My session", renamed=None, messages=[], slug_words=[])
    for i in range(5):
        assert t.observe(prompt(f"prompt number {i}")) is None
    assert not t.generated("Something else") and t.title == "My session"
    u = ReplTitles.start(explicit=None, renamed=None, messages=[], slug_words=[])
    u.observe(prompt("one"))
    u.rename("Chosen")
    assert u.observe(prompt("two")) is None and u.observe(prompt("three")) is None and u.title == "Chosen"


def test_a_conversation_of_three_prompts_already_names_itself() -> None:
    t = ReplTitles.start(explicit=None, renamed=None, messages=[prompt(f"prompt {i}") for i in range(5)], slug_words=[])
    assert t.title == "prompt 4"
    assert t.observe(prompt("more")) is None


def test_summary_title_is_deterministic() -> None:
    texts = ["Fix the login bug", "add a test for the login bug", "login page css"]
    assert summary_title(texts) == "Fix login bug add test page"
    assert summary_title(["a an the", "123"]) is None
    assert slug_title([]) == "remote-control"


@settings(deadline=None, max_examples=200)
@given(st.lists(st.text(max_size=80), max_size=8))
def test_summary_title_bounds(texts: list[str]) -> None:
    title = summary_title(texts)
    assert title is None or (0 < len(title) <= 50 and title == summary_title(list(texts)))
