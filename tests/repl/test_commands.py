"""Slash commands and permission answers as typed at the REPL."""

from __future__ import annotations

import pytest

from tether.protocol.messages import PermissionAllow, PermissionDeny
from tether.repl.commands import REMOTE_SAFE, Command, CommandError, is_command, parse_answer, parse_command


def test_commands_and_aliases() -> None:
    assert parse_command("/rc") == Command("remote-control")
    assert parse_command("/remote-control My session --mirror") == Command(
        "remote-control", ("My", "session"), frozenset({"mirror"}))
    assert parse_command("/RC 'my name'").text == "my name"
    assert parse_command("/rc qr").args == ("qr",)
    assert parse_command("/rename  Fix the parser ").text == "Fix the parser"
    assert parse_command("/quit").name == "exit"
    for name in ("clear", "cost", "status", "help", "exit"):
        assert parse_command(f"/{name}") == Command(name)
    assert REMOTE_SAFE == {"clear", "cost", "status", "help"}


@pytest.mark.parametrize(("text", "error"), [
    ("/frobnicate", "Unknown command /frobnicate · /help lists the commands"),
    ("/rename", "/rename needs a title: /rename <title>"),
    ("/cost now", "/cost takes no arguments"),
    ("/rc --perpetual", "/rc: unknown option --perpetual · usage: /remote-control [name] [--mirror]"),
    ("/rename 'unclosed", "/rename: No closing quotation"),
])
def test_bad_commands_say_how(text: str, error: str) -> None:
    with pytest.raises(CommandError) as exc:
        parse_command(text)
    assert str(exc.value) == error


def test_what_counts_as_a_command() -> None:
    assert is_command("/rc") and is_command("  /help ")
    assert not is_command("/") and not is_command("//not a command") and not is_command("path /x")


REQUEST = {"tool_name": "Bash", "input": {"command": "ls"},
           "permission_suggestions": [{"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "ls"}],
                                       "behavior": "allow", "destination": "session"}]}


def test_answers() -> None:
    assert parse_answer("y", REQUEST) == PermissionAllow({"command": "ls"})
    assert parse_answer(" YES ", REQUEST) == PermissionAllow({"command": "ls"})
    always = parse_answer("a", REQUEST)
    assert isinstance(always, PermissionAllow) and always.updated_permissions == REQUEST["permission_suggestions"]
    bare = parse_answer("always", {"tool_name": "Write", "input": {}})
    assert isinstance(bare, PermissionAllow) and bare.updated_permissions == [
        {"type": "addRules", "rules": [{"toolName": "Write"}], "behavior": "allow", "destination": "session"}]
    assert parse_answer("n", REQUEST) == PermissionDeny("User denied permission")
    assert parse_answer("d use git status instead", REQUEST) == PermissionDeny("use git status instead")
    assert parse_answer("deny", REQUEST) == PermissionDeny("User denied permission")
    for text in ("", "maybe", "y please", "yes do it"):
        assert parse_answer(text, REQUEST) is None
