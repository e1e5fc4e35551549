"""Permission rules and ``PermissionUpdate`` application (docs/protocol.md §7.4).

A rule names a tool and, optionally, a *rule content* that narrows it: ``Bash`` (every
command), ``Bash(npm run:*)`` (a command prefix), ``Bash(git status)`` (one exact
command), ``Edit(src/**)`` (a path glob). :class:`RuleBook` holds the session's
allow / deny / ask rules, extra working directories and permission mode, and applies
the ``PermissionUpdate`` objects that permission answers carry
(``updatedPermissions``). Pure: what a rule content is matched against (a command, a
path) is the caller's choice, passed in as :class:`RuleTarget`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final, Literal

__all__ = [
    "RULE_BEHAVIORS",
    "PermissionRule",
    "RuleBehavior",
    "RuleBook",
    "RuleError",
    "RuleTarget",
    "TargetKind",
    "UpdateOutcome",
    "content_matches",
    "parse_rule",
    "parse_rule_string",
    "rule_matches",
]

RuleBehavior = Literal["allow", "deny", "ask"]
RULE_BEHAVIORS: Final[tuple[RuleBehavior, ...]] = ("allow", "deny", "ask")
TargetKind = Literal["command", "path", "exact"]

_RULE_STRING: Final = re.compile(r"^\s*([A-Za-z0-9_.:-]+)\s*(?:\((.*)\))?\s*$", re.DOTALL)


class RuleError(ValueError):
    """A rule or PermissionUpdate that cannot be understood; ``str(exc)`` says why."""


@dataclass(frozen=True)
class PermissionRule:
    tool_name: str
    rule_content: str | None = None

    def to_json(self) -> dict[str, str]:
        out = {"toolName": self.tool_name}
        if self.rule_content is not None:
            out["ruleContent"] = self.rule_content
        return out

    def __str__(self) -> str:
        return self.tool_name if self.rule_content is None else f"{self.tool_name}({self.rule_content})"


def parse_rule(value: object) -> PermissionRule:
    """``{toolName, ruleContent?}`` → rule."""
    if not isinstance(value, Mapping):
        raise RuleError("a rule must be an object with 'toolName'")
    name = value.get("toolName")
    if not isinstance(name, str) or not name:
        raise RuleError("a rule needs a non-empty string 'toolName'")
    content = value.get("ruleContent")
    if content is not None and not isinstance(content, str):
        raise RuleError("'ruleContent' must be a string")
    return PermissionRule(name, content if content else None)


def parse_rule_string(text: str) -> PermissionRule:
    """``Bash``, ``Bash(npm run:*)``, ``Edit(src/**)`` → rule (the ``--allowedTools`` syntax)."""
    m = _RULE_STRING.match(text)
    if m is None:
        raise RuleError(f"not a permission rule: {text!r} (expected Tool or Tool(content))")
    content = m.group(2)
    return PermissionRule(m.group(1), content.strip() if content and content.strip() else None)


@dataclass(frozen=True)
class RuleTarget:
    """What a tool call offers to rule contents.

    ``kind`` says how contents are matched: ``command`` (exact, ``prefix:*`` or ``*``
    wildcards), ``path`` (globs with ``**``; every candidate is tried, e.g. the path
    relative to the working directory and the absolute one), ``exact`` (string equality).
    ``candidates`` empty means only content-less rules can match.
    """

    kind: TargetKind
    candidates: tuple[str, ...] = ()


def content_matches(pattern: str, target: RuleTarget) -> bool:
    if target.kind == "command":
        return any(_command_matches(pattern, c) for c in target.candidates)
    if target.kind == "path":
        return any(_path_matches(pattern, c) for c in target.candidates)
    return pattern in target.candidates


def _command_matches(pattern: str, command: str) -> bool:
    command = command.strip()
    pattern = pattern.strip()
    if pattern.endswith(":*"):
        prefix = pattern[:-2].rstrip()
        return command == prefix or command.startswith(prefix + " ")
    if "*" in pattern:
        return _wildcard(pattern).fullmatch(command) is not None
    return command == pattern


@lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(p) for p in pattern.split("*")), re.DOTALL)


def _path_matches(pattern: str, path: str) -> bool:
    pattern = pattern.strip()
    if not pattern:
        return False
    if pattern.endswith("/"):
        pattern += "**"
    if _glob(pattern).fullmatch(path) is not None:
        return True
    # gitignore-style: a pattern without a slash matches a name at any depth
    if "/" not in pattern:
        return _glob(pattern).fullmatch(path.rsplit("/", 1)[-1]) is not None
    return False


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        elif ch == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def rule_matches(rule: PermissionRule, tool_name: str, target: RuleTarget) -> bool:
    if rule.tool_name != tool_name:
        return False
    if rule.rule_content is None or rule.rule_content == "*":
        return True
    return content_matches(rule.rule_content, target)


@dataclass(frozen=True)
class UpdateOutcome:
    """What one applied update changed (``mode`` is the new mode when it changed)."""

    kind: str
    mode: str | None = None
    rules_changed: int = 0
    directories_changed: int = 0


@dataclass
class RuleBook:
    """The session's rules, directories and mode. Destinations are all honoured for the session."""

    mode: str = "default"
    allow: list[PermissionRule] = field(default_factory=list)
    deny: list[PermissionRule] = field(default_factory=list)
    ask: list[PermissionRule] = field(default_factory=list)
    directories: list[str] = field(default_factory=list)

    def rules(self, behavior: RuleBehavior) -> list[PermissionRule]:
        return {"allow": self.allow, "deny": self.deny, "ask": self.ask}[behavior]

    def find(self, behavior: RuleBehavior, tool_name: str, target: RuleTarget) -> PermissionRule | None:
        for rule in self.rules(behavior):
            if rule_matches(rule, tool_name, target):
                return rule
        return None

    def add_rules(self, behavior: RuleBehavior, rules: Iterable[PermissionRule]) -> int:
        bucket = self.rules(behavior)
        added = 0
        for rule in rules:
            if rule not in bucket:
                bucket.append(rule)
                added += 1
        return added

    def apply(self, update: Mapping[str, Any], valid_modes: Iterable[str]) -> UpdateOutcome:
        """Apply one ``PermissionUpdate``; raises :class:`RuleError` for a malformed one."""
        kind = update.get("type")
        if kind in ("addRules", "replaceRules", "removeRules"):
            behavior = update.get("behavior")
            if behavior not in RULE_BEHAVIORS:
                raise RuleError(f"{kind}: 'behavior' must be allow, deny or ask, got {behavior!r}")
            raw = update.get("rules")
            if not isinstance(raw, list):
                raise RuleError(f"{kind}: 'rules' must be a list")
            rules = [parse_rule(r) for r in raw]
            bucket = self.rules(behavior)
            if kind == "addRules":
                return UpdateOutcome(kind, rules_changed=self.add_rules(behavior, rules))
            if kind == "replaceRules":
                bucket.clear()
                return UpdateOutcome(kind, rules_changed=self.add_rules(behavior, rules))
            before = len(bucket)
            bucket[:] = [r for r in bucket if r not in rules]
            return UpdateOutcome(kind, rules_changed=before - len(bucket))
        if kind == "setMode":
            mode = update.get("mode")
            if not isinstance(mode, str) or mode not in set(valid_modes):
                raise RuleError(f"setMode: unknown mode {mode!r}")
            changed = mode != self.mode
            self.mode = mode
            return UpdateOutcome(kind, mode=mode if changed else None)
        if kind in ("addDirectories", "removeDirectories"):
            dirs = update.get("directories")
            if not isinstance(dirs, list) or not all(isinstance(d, str) and d for d in dirs):
                raise RuleError(f"{kind}: 'directories' must be a list of strings")
            if kind == "addDirectories":
                new = [d for d in dirs if d not in self.directories]
                self.directories.extend(new)
                return UpdateOutcome(kind, directories_changed=len(new))
            before = len(self.directories)
            self.directories[:] = [d for d in self.directories if d not in dirs]
            return UpdateOutcome(kind, directories_changed=before - len(self.directories))
        raise RuleError(f"unknown PermissionUpdate type {kind!r}")
