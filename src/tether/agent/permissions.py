"""Permission decisions for tool calls: modes, session rules, working directories. Pure.

Every tool has a permission class:

* ``read`` (Read, Glob, Grep, LS): allowed without asking inside the working
  directories; outside them the user is asked.
* ``edit`` (Write, Edit): asked, unless the mode is ``acceptEdits`` and the path is
  inside the working directories.
* ``execute`` (Bash): asked, unless the mode is ``bypassPermissions``.

Order of precedence for one call: a matching deny rule denies; ``bypassPermissions``
allows; ``plan`` denies anything that can change the machine; a matching ask rule
asks; a matching allow rule allows; then the class defaults above. ``dontAsk`` turns
every remaining "ask" into a deny. The session's rules come from ``--allowedTools`` /
``--disallowedTools`` and from ``updatedPermissions`` of permission answers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from tether.protocol.messages import PERMISSION_MODES
from tether.protocol.permission_rules import (
    PermissionRule,
    RuleBook,
    RuleError,
    RuleTarget,
    UpdateOutcome,
)

PermissionClass = Literal["read", "edit", "execute"]
Verdict = Literal["allow", "deny", "ask"]
MODES: Final = PERMISSION_MODES


@dataclass(frozen=True)
class Check:
    verdict: Verdict
    reason: str
    rule: PermissionRule | None = None


@dataclass(frozen=True)
class CallTarget:
    """What a tool call touches: rule-match candidates and the path it writes or reads."""

    rule_target: RuleTarget
    path: str | None = None
    """Absolute path the call reads or writes (None for Bash)."""
    is_dir: bool = False
    """``path`` names a directory (LS, Glob, Grep), not a file."""


def is_within(path: str, roots: Iterable[str]) -> bool:
    norm = os.path.normpath(path)
    for root in roots:
        r = os.path.normpath(root)
        if norm == r or norm.startswith(r.rstrip(os.sep) + os.sep):
            return True
    return False


class PermissionPolicy:
    """Decides allow / deny / ask for one call; owns the session's :class:`RuleBook`."""

    def __init__(self, book: RuleBook, cwd: str) -> None:
        if book.mode not in MODES:
            raise ValueError(f"unknown permission mode {book.mode!r}")
        self.book = book
        self.cwd = os.path.abspath(cwd)

    @property
    def mode(self) -> str:
        return self.book.mode

    def set_mode(self, mode: str) -> bool:
        """True when the mode changed; ValueError for an unknown one."""
        if mode not in MODES:
            raise ValueError(f"unknown permission mode {mode!r}; expected one of {', '.join(sorted(MODES))}")
        changed = mode != self.book.mode
        self.book.mode = mode
        return changed

    @property
    def working_dirs(self) -> list[str]:
        return [self.cwd, *(os.path.join(self.cwd, d) for d in self.book.directories)]

    def check(self, tool_name: str, pclass: PermissionClass, target: CallTarget) -> Check:
        book = self.book
        rule = book.find("deny", tool_name, target.rule_target)
        if rule is not None:
            return Check("deny", f"Permission to use {tool_name} has been denied by the rule {rule}.", rule)
        if book.mode == "bypassPermissions":
            return Check("allow", "bypassPermissions mode")
        if book.mode == "plan" and pclass != "read":
            return Check("deny", f"{tool_name} is not allowed in plan mode: only read-only tools may run "
                                 "until the plan is approved.")
        rule = book.find("ask", tool_name, target.rule_target)
        if rule is not None:
            return self._unless_dont_ask(Check("ask", f"The rule {rule} requires approval.", rule), tool_name)
        rule = book.find("allow", tool_name, target.rule_target)
        if rule is not None:
            return Check("allow", f"Allowed by the rule {rule}.", rule)
        inside = target.path is None or is_within(target.path, self.working_dirs)
        if pclass == "read":
            if inside:
                return Check("allow", "read-only tool")
            return self._unless_dont_ask(
                Check("ask", "Path is outside allowed working directories"), tool_name
            )
        if pclass == "edit" and book.mode == "acceptEdits" and inside:
            return Check("allow", "acceptEdits mode")
        reason = "This command requires approval" if pclass == "execute" else (
            "Path is outside allowed working directories" if not inside else "File edits require approval"
        )
        return self._unless_dont_ask(Check("ask", reason), tool_name)

    def _unless_dont_ask(self, check: Check, tool_name: str) -> Check:
        if self.book.mode == "dontAsk":
            return Check("deny", f"Permission to use {tool_name} was not granted in advance (dontAsk mode).",
                         check.rule)
        return check

    def apply_updates(self, updates: Iterable[Mapping[str, Any]]) -> list[UpdateOutcome]:
        """Apply ``updatedPermissions``; malformed entries are skipped (docs/protocol.md §7.4)."""
        out: list[UpdateOutcome] = []
        for update in updates:
            try:
                out.append(self.book.apply(update, MODES))
            except RuleError:
                continue
        return out

    def suggestions(self, tool_name: str, pclass: PermissionClass, target: CallTarget,
                    content: str | None) -> list[dict[str, Any]]:
        """``permission_suggestions`` for a prompt (all for this session only)."""
        out: list[dict[str, Any]] = []
        if pclass == "execute" and content:
            out.append({"type": "addRules", "rules": [{"toolName": tool_name, "ruleContent": content}],
                        "behavior": "allow", "destination": "session"})
        if target.path is not None and not is_within(target.path, self.working_dirs):
            parent = target.path if target.is_dir else os.path.dirname(target.path)
            out.append({"type": "addDirectories", "directories": [parent], "destination": "session"})
        if pclass == "edit" and self.book.mode != "acceptEdits":
            out.append({"type": "setMode", "mode": "acceptEdits", "destination": "session"})
        if pclass == "read" and not out:
            out.append({"type": "addRules", "rules": [{"toolName": tool_name}], "behavior": "allow",
                        "destination": "session"})
        return out
