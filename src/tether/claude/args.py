"""The ``claude`` arguments of ``tether claude [claude args…]``, sorted for the three ways the
CLI is started: the TUI the first time, the TUI again after a hand-back (``--resume <uuid>``),
and the headless run (``claude --resume <uuid> -p --input-format stream-json …``). Pure.

The option table is the pinned CLI's (2.1.197, ``claude --help``): options that take a value,
those whose value is optional, and the session options ``tether claude`` manages itself.
Anything else is passed on unchanged (an unknown ``--flag`` is taken to have no value).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

VALUE_OPTIONS: Final = frozenset({
    "--add-dir", "--agent", "--agents", "--allowedTools", "--allowed-tools", "--append-system-prompt", "--betas",
    "--debug-file", "--disallowedTools", "--disallowed-tools", "--effort", "--fallback-model", "--file",
    "--input-format", "--json-schema", "--max-budget-usd", "--mcp-config", "--model", "-n", "--name",
    "--output-format", "--permission-mode", "--plugin-dir", "--plugin-url", "--remote-control-session-name-prefix",
    "--session-id", "--setting-sources", "--settings", "--system-prompt", "--tools", "--max-turns",
    "--permission-prompt-tool", "--system-prompt-file", "--append-system-prompt-file",
})
VARIADIC_OPTIONS: Final = frozenset({"--add-dir", "--allowedTools", "--allowed-tools", "--betas",
                                     "--disallowedTools", "--disallowed-tools", "--file", "--mcp-config", "--tools"})
OPTIONAL_VALUE_OPTIONS: Final = frozenset({"-d", "--debug", "--from-pr", "--prompt-suggestions", "-r", "--resume",
                                           "-w", "--worktree", "--remote-control"})
SESSION_OPTIONS: Final = frozenset({"-r", "--resume", "-c", "--continue", "--session-id", "--fork-session",
                                    "--from-pr"})
REFUSED: Final = {
    "-p": "tether claude runs the interactive TUI; for a headless run use `claude -p` (or `tether rc`).",
    "--print": "tether claude runs the interactive TUI; for a headless run use `claude -p` (or `tether rc`).",
    "--bg": "a background agent has no terminal to hand over.",
    "--background": "a background agent has no terminal to hand over.",
    "-w": "--worktree moves the session to another directory; start tether claude inside the worktree instead.",
    "--worktree": "--worktree moves the session to another directory; start tether claude inside the worktree "
                  "instead.",
    "--tmux": "--tmux needs --worktree; start tether claude inside the worktree instead.",
    "--remote-control": "that is Claude Code's own Remote Control; tether claude connects the session to Tether.",
    "--input-format": "the TUI reads the keyboard.",
    "--output-format": "the TUI draws the terminal.",
    "--no-session-persistence": "tether claude follows the session's transcript; it must be written.",
    "-h": "run `claude --help` for the CLI's own help.",
    "--help": "run `claude --help` for the CLI's own help.",
    "-v": "run `claude --version`.",
    "--version": "run `claude --version`.",
}
SUBCOMMANDS: Final = frozenset({"agents", "auth", "auto-mode", "doctor", "gateway", "install", "mcp", "plugin",
                                "plugins", "project", "setup-token", "ultrareview", "update", "upgrade"})
# Options that only mean something to the interactive TUI: not given to the headless run.
TUI_ONLY: Final = frozenset({"--ide", "--chrome", "--no-chrome", "--ax-screen-reader", "-n", "--name"})
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ClaudeArgsError(ValueError):
    """Arguments ``tether claude`` cannot run with; the message says why and what to do."""


@dataclass(frozen=True)
class Option:
    name: str
    values: tuple[str, ...] = ()
    inline: bool = False  # written as --name=value

    def argv(self) -> list[str]:
        if self.inline:
            return [f"{self.name}={self.values[0]}"]
        return [self.name, *self.values]


@dataclass(frozen=True)
class ClaudeArgs:
    options: tuple[Option, ...] = ()
    prompt: str | None = None
    resume: str | None = None
    """``--resume <uuid>``: the session to continue (None: another form, or none)."""
    session_id: str | None = None
    continue_latest: bool = False
    resume_picker: bool = False
    """``--resume`` without a uuid (or ``--from-pr``): the CLI asks which session."""
    fork: bool = False
    settings: str | None = None
    """The person's own ``--settings`` value (merged with Tether's hooks)."""

    @property
    def known_session(self) -> str | None:
        """The session uuid the first TUI will write, when it can be told in advance."""
        if self.fork:
            return self.session_id  # the fork's id, when one was chosen
        return self.session_id or self.resume

    def first_tui(self, session_id: str | None, settings: str) -> list[str]:
        """The first TUI: the person's arguments; ``--session-id`` when no session was chosen."""
        argv = self._passed(tui=True)
        if self.resume:
            argv += ["--resume", self.resume]
        elif self.resume_picker:
            argv += ["--resume"]
        elif self.continue_latest:
            argv += ["--continue"]
        if self.session_id or (session_id and not (self.resume or self.resume_picker or self.continue_latest)):
            argv += ["--session-id", self.session_id or str(session_id)]
        if self.fork:
            argv += ["--fork-session"]
        argv += ["--settings", settings]
        if self.prompt is not None:
            argv += ["--", self.prompt]
        return argv

    def tui_again(self, session_id: str, settings: str, *, exists: bool = True) -> list[str]:
        """The TUI after a hand-back: the same session, without the first prompt (a session that
        has no transcript yet, nothing having been said, is started again with ``--session-id``)."""
        return [*self._passed(tui=True), "--resume" if exists else "--session-id", session_id, "--settings", settings]

    def headless(self, session_id: str, *, exists: bool) -> list[str]:
        """Arguments for ``claude`` before the session host's ``-p --input-format stream-json …``
        (a session without a transcript yet is started with ``--session-id``)."""
        argv = ["--resume" if exists else "--session-id", session_id, *self._passed(tui=False)]
        if self.settings is not None:
            argv += ["--settings", self.settings]
        return argv

    def _passed(self, *, tui: bool) -> list[str]:
        out: list[str] = []
        for option in self.options:
            if not tui and option.name in TUI_ONLY:
                continue
            out += option.argv()
        return out


def _takes_value(name: str) -> bool:
    return name in VALUE_OPTIONS


def parse(argv: Sequence[str]) -> ClaudeArgs:
    """Sort ``argv`` (the arguments after ``tether claude``). Raises :class:`ClaudeArgsError`."""
    options: list[Option] = []
    positional: list[str] = []
    resume: str | None = None
    session_id: str | None = None
    settings: str | None = None
    flags = {"continue": False, "picker": False, "fork": False}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            positional += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            positional.append(arg)
            continue
        name, inline = arg, None
        if arg.startswith("--") and "=" in arg:
            name, inline = arg.split("=", 1)
        if name in REFUSED:
            raise ClaudeArgsError(f"{name}: {REFUSED[name]}")
        values: list[str] = []
        if inline is not None:
            values = [inline]
        elif _takes_value(name):
            if i >= len(args):
                raise ClaudeArgsError(f"{name} needs a value.")
            values.append(args[i])
            i += 1
            if name in VARIADIC_OPTIONS:
                while i < len(args) and not args[i].startswith("-"):
                    values.append(args[i])
                    i += 1
        elif name in OPTIONAL_VALUE_OPTIONS and i < len(args) and not args[i].startswith("-"):
            values.append(args[i])  # as the CLI's parser does: `--resume words` searches for a session
            i += 1
        if name in ("-r", "--resume"):
            if values and _UUID.match(values[0]):
                resume = values[0].lower()
            else:
                if values:
                    raise ClaudeArgsError(f"--resume {values[0]}: tether claude needs a session uuid here "
                                          "(or --resume alone, to pick one).")
                flags["picker"] = True
        elif name in ("-c", "--continue"):
            flags["continue"] = True
        elif name == "--session-id":
            if not _UUID.match(values[0]):
                raise ClaudeArgsError(f"--session-id {values[0]}: not a uuid.")
            session_id = values[0].lower()
        elif name == "--fork-session":
            flags["fork"] = True
        elif name == "--from-pr":
            flags["picker"] = True
        elif name == "--settings":
            settings = values[0]
        else:
            options.append(Option(name, tuple(values), inline is not None))
    if positional and positional[0] in SUBCOMMANDS:
        raise ClaudeArgsError(f"`claude {positional[0]}` is not an interactive session; run it with `claude` "
                              "directly.")
    if len(positional) > 1:
        raise ClaudeArgsError(f"one prompt at most (got {len(positional)} words: quote the prompt).")
    if sum(bool(x) for x in (resume, session_id, flags["continue"], flags["picker"])) > 1 and not (
            session_id and (resume or flags["continue"]) and flags["fork"]):
        raise ClaudeArgsError("choose one of --resume, --continue and --session-id.")
    return ClaudeArgs(options=tuple(options), prompt=positional[0] if positional else None, resume=resume,
                      session_id=session_id, continue_latest=flags["continue"], resume_picker=flags["picker"],
                      fork=flags["fork"], settings=settings)
