"""Permission rules and PermissionUpdates (docs/protocol.md §7.4): the rule syntax, how a rule content
matches a command, a path or an exact value, and what each PermissionUpdate does to a RuleBook
(and which malformed ones it refuses)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.permission_rules import (
    PermissionRule,
    RuleBook,
    RuleError,
    RuleTarget,
    UpdateOutcome,
    content_matches,
    parse_rule,
    parse_rule_string,
    rule_matches,
)

CWD = "/work/project"
MODES = {"default", "acceptEdits", "plan"}

# ---- rule syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rule"), [
    ("Bash", PermissionRule("Bash")),
    ("Bash(npm run:*)", PermissionRule("Bash", "npm run:*")),
    (" Edit( src/** ) ", PermissionRule("Edit", "src/**")),
    ("Bash()", PermissionRule("Bash")),
    ("Bash(  )", PermissionRule("Bash")),
    ("mcp__server__tool", PermissionRule("mcp__server__tool")),
    ("Bash(echo (a))", PermissionRule("Bash", "echo (a)")),
])
def test_rule_strings(text: str, rule: PermissionRule) -> None:
    assert parse_rule_string(text) == rule


@pytest.mark.parametrize("bad", ["", "Bash(", "two words", "(ls)", "Bash(ls) x"])
def test_bad_rule_strings_are_refused(bad: str) -> None:
    with pytest.raises(RuleError, match="not a permission rule"):
        parse_rule_string(bad)


@pytest.mark.parametrize("rule", [PermissionRule("Bash"), PermissionRule("Bash", "ls -la"),
                                  PermissionRule("Edit", "src/**")])
def test_rule_round_trips_through_its_string_and_json(rule: PermissionRule) -> None:
    assert parse_rule_string(str(rule)) == rule
    assert parse_rule(rule.to_json()) == rule


def test_rule_json_shape() -> None:
    assert PermissionRule("Bash", "ls").to_json() == {"toolName": "Bash", "ruleContent": "ls"}
    assert PermissionRule("Read").to_json() == {"toolName": "Read"}
    assert str(PermissionRule("Bash", "ls")) == "Bash(ls)" and str(PermissionRule("Read")) == "Read"


def test_empty_rule_content_means_the_whole_tool() -> None:
    assert parse_rule({"toolName": "Read", "ruleContent": ""}) == PermissionRule("Read")
    assert parse_rule({"toolName": "Read", "ruleContent": None}) == PermissionRule("Read")


@pytest.mark.parametrize(("value", "reason"), [
    ("Bash", "must be an object"),
    (None, "must be an object"),
    ({"ruleContent": "x"}, "non-empty string 'toolName'"),
    ({"toolName": ""}, "non-empty string 'toolName'"),
    ({"toolName": 3}, "non-empty string 'toolName'"),
    ({"toolName": "Bash", "ruleContent": 3}, "'ruleContent' must be a string"),
])
def test_bad_rule_objects_are_refused(value: object, reason: str) -> None:
    with pytest.raises(RuleError, match=reason):
        parse_rule(value)


# ---- matching -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "command", "matches"), [
    ("git status", "git status", True),
    ("git status", "  git status ", True),
    ("git status", "git push", False),
    ("npm run:*", "npm run test", True),
    ("npm run:*", "npm run", True),
    ("npm run :*", "npm run test", True),
    ("npm run:*", "npm running", False),
    ("git * --dry-run", "git push origin --dry-run", True),
    ("git * --dry-run", "git push origin", False),
    ("echo *", "echo a\nb", True),
    ("a.b", "axb", False),  # wildcard patterns escape everything but *
    ("a.*", "axb", False),
])
def test_command_contents(pattern: str, command: str, matches: bool) -> None:
    assert content_matches(pattern, RuleTarget("command", (command,))) is matches


def test_any_command_candidate_may_match() -> None:
    target = RuleTarget("command", ("cd x && make", "make"))
    assert content_matches("make", target)
    assert not content_matches("make", RuleTarget("command"))


@pytest.mark.parametrize(("pattern", "path", "matches"), [
    ("src/**", "src/pkg/app.py", True),
    ("src/", "src/pkg/app.py", True),
    ("**/*.py", "src/pkg/app.py", True),
    ("**/*.py", "app.py", True),
    ("*.py", "src/pkg/app.py", True),  # a bare name matches at any depth
    ("src/*.py", "src/pkg/app.py", False),
    ("src/*.py", "src/app.py", True),
    ("src/?.py", "src/a.py", True),
    ("src/?.py", "src/ab.py", False),
    ("src/?", "src//", False),
    ("docs/**", "src/pkg/app.py", False),
    ("", "src/app.py", False),
    ("  ", "src/app.py", False),
    ("a+b.py", "a+b.py", True),
    ("a+b.py", "aab.py", False),
])
def test_path_globs(pattern: str, path: str, matches: bool) -> None:
    assert content_matches(pattern, RuleTarget("path", (path,))) is matches


def test_path_rules_try_the_relative_and_the_absolute_path() -> None:
    target = RuleTarget("path", ("src/pkg/app.py", f"{CWD}/src/pkg/app.py"))
    assert rule_matches(PermissionRule("Edit", "src/**"), "Edit", target)
    assert rule_matches(PermissionRule("Edit", f"{CWD}/src/**"), "Edit", target)
    assert not rule_matches(PermissionRule("Edit", "/elsewhere/**"), "Edit", target)


def test_exact_contents() -> None:
    target = RuleTarget("exact", ("https://example.com",))
    assert content_matches("https://example.com", target)
    assert not content_matches("https://example.*", target)


@pytest.mark.parametrize(("rule", "tool", "matches"), [
    (PermissionRule("Edit"), "Edit", True),
    (PermissionRule("Edit", "*"), "Edit", True),
    (PermissionRule("Write", "src/**"), "Edit", False),
    (PermissionRule("Write"), "Edit", False),
    (PermissionRule("Edit", "docs/**"), "Edit", False),
])
def test_rule_matches_names_the_tool_first(rule: PermissionRule, tool: str, matches: bool) -> None:
    assert rule_matches(rule, tool, RuleTarget("path", ("src/a.py",))) is matches


def test_content_less_rules_match_calls_without_candidates() -> None:
    assert rule_matches(PermissionRule("WebSearch"), "WebSearch", RuleTarget("exact"))
    assert not rule_matches(PermissionRule("WebSearch", "x"), "WebSearch", RuleTarget("exact"))


@given(st.text(alphabet="abc/. ", max_size=12))
@settings(deadline=None)
def test_a_literal_command_pattern_matches_itself(command: str) -> None:
    assert content_matches(command, RuleTarget("command", (command,)))


# ---- the rule book --------------------------------------------------------------------------------


def test_find_returns_the_first_matching_rule_of_a_behavior() -> None:
    book = RuleBook(allow=[PermissionRule("Bash", "ls"), PermissionRule("Bash")], deny=[PermissionRule("Read")])
    target = RuleTarget("command", ("ls",))
    assert book.find("allow", "Bash", target) == PermissionRule("Bash", "ls")
    assert book.find("allow", "Bash", RuleTarget("command", ("pwd",))) == PermissionRule("Bash")
    assert book.find("deny", "Bash", target) is None
    assert book.find("ask", "Read", target) is None


def test_add_rules_skips_ones_already_there() -> None:
    book = RuleBook()
    assert book.add_rules("ask", [PermissionRule("Bash"), PermissionRule("Bash"), PermissionRule("Read")]) == 2
    assert book.add_rules("ask", [PermissionRule("Read")]) == 0
    assert book.ask == [PermissionRule("Bash"), PermissionRule("Read")]


def rules_update(kind: str, behavior: str, *rules: dict[str, str]) -> dict[str, Any]:
    return {"type": kind, "rules": list(rules), "behavior": behavior, "destination": "session"}


def test_rule_updates_add_replace_and_remove() -> None:
    book = RuleBook()
    added = book.apply(rules_update("addRules", "allow", {"toolName": "Bash", "ruleContent": "ls"}), MODES)
    assert added == UpdateOutcome("addRules", rules_changed=1) and book.allow == [PermissionRule("Bash", "ls")]
    assert book.apply(rules_update("addRules", "allow", {"toolName": "Bash", "ruleContent": "ls"}),
                      MODES).rules_changed == 0
    replaced = book.apply(rules_update("replaceRules", "allow", {"toolName": "Read"}, {"toolName": "Glob"}), MODES)
    assert replaced.rules_changed == 2 and book.allow == [PermissionRule("Read"), PermissionRule("Glob")]
    removed = book.apply(rules_update("removeRules", "allow", {"toolName": "Read"}, {"toolName": "Grep"}), MODES)
    assert removed == UpdateOutcome("removeRules", rules_changed=1) and book.allow == [PermissionRule("Glob")]
    # each behavior has its own bucket
    book.apply(rules_update("addRules", "deny", {"toolName": "Bash"}), MODES)
    assert book.deny == [PermissionRule("Bash")] and book.allow == [PermissionRule("Glob")] and book.ask == []


def test_every_destination_is_honoured_for_the_session() -> None:
    book = RuleBook()
    for destination in ("session", "localSettings", "userSettings", "projectSettings", "cliArg"):
        update = rules_update("addRules", "ask", {"toolName": destination})
        update["destination"] = destination
        book.apply(update, MODES)
    assert len(book.ask) == 5


def test_set_mode_reports_only_a_change() -> None:
    book = RuleBook()
    assert book.apply({"type": "setMode", "mode": "acceptEdits"}, MODES) == UpdateOutcome("setMode", mode="acceptEdits")
    assert book.mode == "acceptEdits"
    assert book.apply({"type": "setMode", "mode": "acceptEdits"}, MODES) == UpdateOutcome("setMode", mode=None)


def test_directory_updates() -> None:
    book = RuleBook(directories=["/a"])
    added = book.apply({"type": "addDirectories", "directories": ["/a", "/b", "/c"]}, MODES)
    assert added == UpdateOutcome("addDirectories", directories_changed=2) and book.directories == ["/a", "/b", "/c"]
    removed = book.apply({"type": "removeDirectories", "directories": ["/b", "/zzz"]}, MODES)
    assert removed == UpdateOutcome("removeDirectories", directories_changed=1) and book.directories == ["/a", "/c"]


@pytest.mark.parametrize(("update", "reason"), [
    ({"type": "setMode", "mode": "yolo"}, "setMode: unknown mode 'yolo'"),
    ({"type": "setMode"}, "setMode: unknown mode None"),
    ({"type": "addRules", "rules": "Bash", "behavior": "allow"}, "addRules: 'rules' must be a list"),
    ({"type": "addRules", "rules": [], "behavior": "maybe"}, "'behavior' must be allow, deny or ask"),
    ({"type": "removeRules", "rules": []}, "'behavior' must be allow, deny or ask"),
    ({"type": "replaceRules", "rules": [{"toolName": ""}], "behavior": "deny"}, "toolName"),
    ({"type": "addDirectories", "directories": "/a"}, "'directories' must be a list of strings"),
    ({"type": "removeDirectories", "directories": ["/a", ""]}, "'directories' must be a list of strings"),
    ({"type": "addDirectories", "directories": [3]}, "'directories' must be a list of strings"),
    ({"type": "teleport"}, "unknown PermissionUpdate type 'teleport'"),
    ({}, "unknown PermissionUpdate type None"),
])
def test_malformed_updates_are_refused_and_change_nothing(update: dict[str, Any], reason: str) -> None:
    book = RuleBook(allow=[PermissionRule("Read")], directories=["/a"])
    with pytest.raises(RuleError) as caught:
        book.apply(update, MODES)
    assert reason in str(caught.value)
    assert book == RuleBook(allow=[PermissionRule("Read")], directories=["/a"])
