"""Slash commands and permission answers typed at the REPL (pure parsing, no I/O).

* :func:`parse_command`: ``/remote-control [name] [--mirror]`` (alias ``/rc``; ``/rc qr`` shows the
  session URL's QR code), ``/rename <title>``, ``/clear``, ``/cost``, ``/status``, ``/help``,
  ``/exit`` (alias ``/quit``). Anything else that starts with ``/`` is an unknown command.
* :func:`parse_answer`: the answer to a permission question: ``y`` (allow once), ``a`` (allow and
  remember: the agent's suggestions, else an allow rule for the tool in this session), ``n``
  (deny), ``d <message>`` (deny with a message the agent reads).
* :data:`REMOTE_SAFE`: the commands a prompt from a remote client may run (docs/protocol.md §7.5: only
  bridge-safe ones); a remote prompt with any other ``/word`` goes to the agent as text.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from tether.protocol.messages import PermissionAllow, PermissionDecision, PermissionDeny

LOCAL_DENY: Final = "User denied permission"


@dataclass(frozen=True)
class CommandSpec:
    name: str
    usage: str
    help: str
    aliases: tuple[str, ...] = ()


COMMANDS: Final[tuple[CommandSpec, ...]] = (
    CommandSpec("remote-control", "/remote-control [name] [--mirror]",
                "Share this session with your Tether server (again: stop sharing). `/rc qr`: QR code.", ("rc",)),
    CommandSpec("rename", "/rename <title>", "Name the session (a name you choose is never replaced)."),
    CommandSpec("clear", "/clear", "Start a fresh conversation (the agent forgets this one)."),
    CommandSpec("cost", "/cost", "What this conversation cost so far."),
    CommandSpec("status", "/status", "Agent, model, directory, server and remote control."),
    CommandSpec("help", "/help", "This list."),
    CommandSpec("exit", "/exit", "Leave (also Ctrl-D).", ("quit",)),
)
_BY_NAME: Final[dict[str, str]] = {alias: spec.name for spec in COMMANDS for alias in (spec.name, *spec.aliases)}
REMOTE_SAFE: Final = frozenset({"clear", "cost", "status", "help"})
KEYS_HELP: Final = (("Enter", "send"), ("Alt-Enter, or a line ending in \\", "new line"),
                    ("Ctrl-C", "stop the turn (or clear the line)"), ("Ctrl-D", "exit"),
                    ("↑ / ↓", "history"))


class CommandError(ValueError):
    """A command that cannot be run as typed; the message says how to type it."""


@dataclass(frozen=True)
class Command:
    name: str
    args: tuple[str, ...] = ()
    flags: frozenset[str] = field(default_factory=frozenset)

    @property
    def text(self) -> str:
        return " ".join(self.args)


def is_command(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith("/") and len(stripped) > 1 and not stripped.startswith("//")


def parse_command(text: str) -> Command:
    """``/name args…`` → :class:`Command`; raises :class:`CommandError` for unknown names, bad quoting
    and missing arguments."""
    stripped = text.strip()
    head, _, rest = stripped[1:].partition(" ")
    name = _BY_NAME.get(head.lower())
    if name is None:
        raise CommandError(f"Unknown command /{head} · /help lists the commands")
    try:
        words = shlex.split(rest)
    except ValueError as exc:
        raise CommandError(f"/{head}: {exc}") from None
    flags = frozenset(w[2:] for w in words if w.startswith("--") and len(w) > 2)
    args = tuple(w for w in words if not (w.startswith("--") and len(w) > 2))
    if name == "remote-control" and flags - {"mirror"}:
        raise CommandError(f"/{head}: unknown option --{sorted(flags - {'mirror'})[0]} · usage: /remote-control "
                           "[name] [--mirror]")
    if name == "rename" and not args:
        raise CommandError("/rename needs a title: /rename <title>")
    if name not in ("remote-control", "rename") and (args or flags):
        raise CommandError(f"/{name} takes no arguments")
    return Command(name, args, flags)


def parse_answer(text: str, request: Mapping[str, Any]) -> PermissionDecision | None:
    """The decision a typed answer stands for, or None when it is not an answer."""
    stripped = text.strip()
    word, _, message = stripped.partition(" ")
    word = word.lower()
    raw = request.get("input")
    tool_input: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if word in ("y", "yes") and not message:
        return PermissionAllow(dict(tool_input))
    if word in ("a", "always") and not message:
        return PermissionAllow(dict(tool_input), updated_permissions=remember_rules(request))
    if word in ("n", "no") and not message:
        return PermissionDeny(LOCAL_DENY)
    if word in ("d", "deny"):
        return PermissionDeny(message.strip() or LOCAL_DENY)
    return None


def remember_rules(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    """What "always" adds: the agent's own suggestions when it made any, else an allow rule for the
    tool in this session."""
    suggestions = request.get("permission_suggestions")
    if isinstance(suggestions, list) and suggestions and all(isinstance(s, dict) for s in suggestions):
        return [dict(s) for s in suggestions]
    tool = request.get("tool_name") if isinstance(request.get("tool_name"), str) else ""
    return [{"type": "addRules", "rules": [{"toolName": tool}], "behavior": "allow", "destination": "session"}]
