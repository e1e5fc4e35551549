"""The agent's permission policy over the rule book: modes, precedence, working directories, suggestions
(the rules themselves: tests/protocol/test_permission_rules.py)."""

from __future__ import annotations

import pytest

from tether.agent.permissions import CallTarget, PermissionPolicy
from tether.protocol.permission_rules import RuleBook, RuleTarget, parse_rule_string

CWD = "/work/project"


def cmd(command: str) -> CallTarget:
    return CallTarget(RuleTarget("command", (command,)))


def path(rel: str) -> CallTarget:
    absolute = rel if rel.startswith("/") else f"{CWD}/{rel}"
    relative = absolute[len(CWD) + 1:] if absolute.startswith(CWD + "/") else absolute
    return CallTarget(RuleTarget("path", (relative, absolute)), absolute)


def policy(mode: str = "default", **rules: list[str]) -> PermissionPolicy:
    book = RuleBook(mode=mode)
    for behavior, texts in rules.items():
        book.add_rules(behavior, [parse_rule_string(t) for t in texts])  # type: ignore[arg-type]
    return PermissionPolicy(book, CWD)


@pytest.mark.parametrize(("mode", "read", "edit", "execute"), [
    ("default", "allow", "ask", "ask"),
    ("acceptEdits", "allow", "allow", "ask"),
    ("bypassPermissions", "allow", "allow", "allow"),
    ("plan", "allow", "deny", "deny"),
    ("dontAsk", "allow", "deny", "deny"),
])
def test_mode_matrix(mode: str, read: str, edit: str, execute: str) -> None:
    p = policy(mode)
    assert p.check("Read", "read", path("src/app.py")).verdict == read
    assert p.check("Edit", "edit", path("src/app.py")).verdict == edit
    assert p.check("Bash", "execute", cmd("make")).verdict == execute


def test_outside_the_working_directories() -> None:
    p = policy("acceptEdits")
    assert p.check("Edit", "edit", path("/etc/passwd")).verdict == "ask"
    assert p.check("Read", "read", path("/etc/passwd")).verdict == "ask"
    assert policy("dontAsk").check("Read", "read", path("/etc/passwd")).verdict == "deny"
    p.apply_updates([{"type": "addDirectories", "directories": ["/etc"], "destination": "session"}])
    assert p.check("Read", "read", path("/etc/passwd")).verdict == "allow"
    assert p.check("Edit", "edit", path("/etc/passwd")).verdict == "allow"


def test_rule_precedence() -> None:
    p = policy("default", allow=["Bash(git status)", "Bash(npm run:*)"], deny=["Bash(rm:*)"],
               ask=["Read(secrets/**)"])
    assert p.check("Bash", "execute", cmd("git status")).verdict == "allow"
    assert p.check("Bash", "execute", cmd("git push")).verdict == "ask"
    assert p.check("Bash", "execute", cmd("npm run test")).verdict == "allow"
    assert p.check("Bash", "execute", cmd("npm run")).verdict == "allow"
    assert p.check("Bash", "execute", cmd("npm running")).verdict == "ask"
    assert p.check("Bash", "execute", cmd("rm -rf /")).verdict == "deny"
    assert p.check("Read", "read", path("secrets/key.pem")).verdict == "ask"
    # deny rules beat bypassPermissions; plan beats allow rules
    assert policy("bypassPermissions", deny=["Bash"]).check("Bash", "execute", cmd("ls")).verdict == "deny"
    assert policy("plan", allow=["Bash"]).check("Bash", "execute", cmd("ls")).verdict == "deny"
    assert policy("dontAsk", allow=["Bash(ls)"]).check("Bash", "execute", cmd("ls")).verdict == "allow"


def test_malformed_updates_are_skipped() -> None:
    p = policy()
    p.apply_updates([{"type": "bogus"}, {"type": "addRules", "rules": [{"toolName": "Bash"}], "behavior": "allow"}])
    assert p.check("Bash", "execute", cmd("anything")).verdict == "allow"


def test_suggestions() -> None:
    p = policy()
    bash = p.suggestions("Bash", "execute", cmd("make test"), "make test")
    assert bash == [{"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "make test"}],
                     "behavior": "allow", "destination": "session"}]
    edit = p.suggestions("Write", "edit", path("a.txt"), "a.txt")
    assert edit == [{"type": "setMode", "mode": "acceptEdits", "destination": "session"}]
    outside = p.suggestions("Write", "edit", path("/tmp/x/a.txt"), "/tmp/x/a.txt")
    assert {"type": "addDirectories", "directories": ["/tmp/x"], "destination": "session"} in outside


def test_unknown_mode() -> None:
    with pytest.raises(ValueError):
        policy().set_mode("yolo")
    with pytest.raises(ValueError):
        PermissionPolicy(RuleBook(mode="auto"), CWD)
