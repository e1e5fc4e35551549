"""`tether claude [claude args…]`: how the person's arguments are sorted for the first TUI, the TUI
after a hand-back and the headless run (tether.claude.args)."""

from __future__ import annotations

import pytest

from tether.claude.args import ClaudeArgsError, parse

SID = "11111111-2222-3333-4444-555555555555"
NEW = "99999999-2222-3333-4444-555555555555"


def test_plain_options_and_a_prompt() -> None:
    args = parse(["--add-dir", "a", "b", "--permission-mode=acceptEdits", "fix the bug"])
    assert args.prompt == "fix the bug" and args.options[0].values == ("a", "b")
    assert parse(["--add-dir", "a", "fix the bug"]).prompt is None  # like the CLI: a variadic option takes it
    args = parse(["--model", "opus", "--permission-mode=acceptEdits", "--add-dir", "a", "--", "fix the bug"])
    assert args.prompt == "fix the bug"
    assert args.first_tui(NEW, "/s.json") == ["--model", "opus", "--permission-mode=acceptEdits", "--add-dir", "a",
                                              "--session-id", NEW, "--settings", "/s.json", "--", "fix the bug"]
    assert args.tui_again(NEW, "/s.json") == ["--model", "opus", "--permission-mode=acceptEdits", "--add-dir", "a",
                                              "--resume", NEW, "--settings", "/s.json"]
    assert args.headless(NEW, exists=True) == ["--resume", NEW, "--model", "opus", "--permission-mode=acceptEdits",
                                               "--add-dir", "a"]
    assert args.headless(NEW, exists=False)[:2] == ["--session-id", NEW]
    assert args.tui_again(NEW, "/s.json", exists=False)[-4:] == ["--session-id", NEW, "--settings", "/s.json"]
    assert args.known_session is None


def test_resume_and_session_choices() -> None:
    args = parse(["-r", SID.upper()])
    assert args.resume == SID and args.known_session == SID
    assert args.first_tui(None, "/s") == ["--resume", SID, "--settings", "/s"]
    assert parse(["--session-id", SID]).known_session == SID
    picker = parse(["--resume"])
    assert picker.resume_picker and picker.known_session is None
    assert picker.first_tui(None, "/s") == ["--resume", "--settings", "/s"]
    assert parse(["--continue"]).first_tui(None, "/s") == ["--continue", "--settings", "/s"]
    fork = parse(["--resume", SID, "--fork-session"])
    assert fork.known_session is None and fork.first_tui(None, "/s") == ["--resume", SID, "--fork-session",
                                                                         "--settings", "/s"]
    assert parse(["--resume", SID, "--fork-session", "--session-id", NEW]).known_session == NEW


def test_the_persons_settings_are_kept_apart() -> None:
    args = parse(["--settings", "/mine.json", "--verbose"])
    assert args.settings == "/mine.json"
    assert args.first_tui(NEW, "/merged.json") == ["--verbose", "--session-id", NEW, "--settings", "/merged.json"]
    assert args.headless(NEW, exists=True) == ["--resume", NEW, "--verbose", "--settings", "/mine.json"]


def test_tui_only_options_stay_with_the_tui() -> None:
    args = parse(["--name", "My work", "--ide", "--model", "haiku"])
    assert args.headless(SID, exists=True) == ["--resume", SID, "--model", "haiku"]
    assert args.tui_again(SID, "/s")[:3] == ["--name", "My work", "--ide"]


@pytest.mark.parametrize("argv, words", [
    (["-p", "hi"], "headless run"),
    (["--print"], "headless run"),
    (["--worktree"], "inside the worktree"),
    (["--output-format", "json"], "draws the terminal"),
    (["--remote-control"], "Claude Code's own Remote Control"),
    (["mcp", "list"], "not an interactive session"),
    (["one", "two"], "one prompt at most"),
    (["--resume", "some words"], "needs a session uuid"),
    (["--session-id", "nope"], "not a uuid"),
    (["--resume", SID, "--continue"], "choose one of"),
    (["--model"], "needs a value"),
])
def test_what_tether_claude_refuses(argv: list[str], words: str) -> None:
    with pytest.raises(ClaudeArgsError, match=words):
        parse(argv)
