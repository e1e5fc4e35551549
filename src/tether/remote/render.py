"""Terminal rendering of an attached session with rich: Markdown, tool cards, diffs, questions.

:func:`render` maps one view item to a rich renderable (or None: nothing to print). Tool
cards show what a tool is about to do: an ``Edit``/``MultiEdit`` as a unified diff, a
``Write`` as the file's first lines, a ``Bash`` command as shell, anything else (and tools
this client does not know) as its JSON input.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text

from tether.protocol.sdk_adapter import (
    AssistantText,
    Delivery,
    Notice,
    PermissionPrompt,
    ServerError,
    SessionState,
    StreamText,
    ToolResult,
    ToolUse,
    TurnEnded,
    UserText,
)
from tether.remote.manager import Connection, HistoryMark, PermissionSettled, ViewItem

MAX_RESULT_LINES: Final = 12
MAX_WRITE_LINES: Final = 20
MAX_INPUT_CHARS: Final = 4000
_LEVEL_STYLE: Final = {"info": "cyan", "warning": "yellow", "error": "bold red", "dim": "dim"}
_SETTLED: Final = {
    "allow": ("✓ Allowed", "green"), "deny": ("✗ Denied", "yellow"), "error": ("✗ Failed", "red"),
    "cancelled": ("– Withdrawn:", "dim"), "elsewhere": ("– Answered elsewhere:", "dim"),
}


def render(item: ViewItem) -> RenderableType | None:
    if isinstance(item, UserText):
        return Text.assemble(("❯ ", "bold cyan"), (item.text, "bold"))
    if isinstance(item, AssistantText):
        return Markdown(item.text)
    if isinstance(item, ToolUse):
        return tool_card(item)
    if isinstance(item, ToolResult):
        return tool_result(item)
    if isinstance(item, PermissionPrompt):
        return permission_card(item)
    if isinstance(item, PermissionSettled):
        label, style = _SETTLED.get(item.outcome, ("–", "dim"))
        tail = f" — {item.message}" if item.message and item.outcome in ("deny", "error") else ""
        return Text(f"{label} {item.prompt.tool_name}{tail}", style=style)
    if isinstance(item, Notice):
        return Text(item.text, style=_LEVEL_STYLE.get(item.level, ""))
    if isinstance(item, Connection):
        return Text(item.text, style=_LEVEL_STYLE.get(item.level, "dim"))
    if isinstance(item, HistoryMark):
        return Text(f"── {item.text} ──", style="dim")
    if isinstance(item, ServerError):
        return Text(f"error: {item.message}", style="bold red")
    if isinstance(item, TurnEnded):
        return None if item.ok else Text(f"(turn ended: {item.subtype})", style="dim")
    if isinstance(item, SessionState | Delivery | StreamText):
        return None  # shown in the status bar, not in the transcript
    return None


def tool_card(item: ToolUse) -> RenderableType:
    title = f"[bold]{item.name}[/]" + ("" if item.known else " [dim](tool unknown to this client)[/]")
    return Panel(tool_body(item.name, item.input, item.known), title=title, title_align="left",
                 subtitle=item.activity, subtitle_align="left", border_style="blue", expand=True)


def tool_body(name: str, tool_input: Mapping[str, Any], known: bool = True) -> RenderableType:
    if known:
        diff = edit_diff(name, tool_input)
        if diff is not None:
            return Syntax(diff, "diff", theme="ansi_dark", word_wrap=True)
        if name == "Write" and isinstance(tool_input.get("content"), str):
            return _file_head(str(tool_input.get("file_path") or ""), tool_input["content"])
        if name == "Bash" and isinstance(tool_input.get("command"), str):
            return Syntax(tool_input["command"], "bash", theme="ansi_dark", word_wrap=True)
    text = json.dumps(dict(tool_input), indent=2, ensure_ascii=False)
    if len(text) > MAX_INPUT_CHARS:
        text = text[:MAX_INPUT_CHARS] + "\n…"
    return Syntax(text, "json", theme="ansi_dark", word_wrap=True)


def edit_diff(name: str, tool_input: Mapping[str, Any]) -> str | None:
    """A unified diff for ``Edit`` (old_string → new_string) and ``MultiEdit`` (each edit)."""
    path = str(tool_input.get("file_path") or "file")
    if name == "Edit":
        edits = [tool_input]
    elif name == "MultiEdit" and isinstance(tool_input.get("edits"), list):
        edits = [e for e in tool_input["edits"] if isinstance(e, Mapping)]
    else:
        return None
    chunks = []
    for edit in edits:
        old, new = edit.get("old_string"), edit.get("new_string")
        if not isinstance(old, str) or not isinstance(new, str):
            return None
        lines = difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{path}", f"b/{path}", lineterm="")
        chunks.append("\n".join(lines))
    return "\n".join(c for c in chunks if c) or None


def _file_head(path: str, content: str) -> RenderableType:
    lines = content.splitlines()
    shown = "\n".join(lines[:MAX_WRITE_LINES])
    lexer = Syntax.guess_lexer(path, shown) if path else "text"
    body = Syntax(shown, lexer, theme="ansi_dark", word_wrap=True)
    if len(lines) > MAX_WRITE_LINES:
        return Group(body, Text(f"… {len(lines) - MAX_WRITE_LINES} more lines", style="dim"))
    return body


def tool_result(item: ToolResult) -> RenderableType:
    lines = item.text.splitlines() or ["(no output)"]
    shown = "\n".join(lines[:MAX_RESULT_LINES])
    more = f"\n… {len(lines) - MAX_RESULT_LINES} more lines" if len(lines) > MAX_RESULT_LINES else ""
    style = "red" if item.is_error else "dim"
    return Text("  ⎿ " + (shown + more).replace("\n", "\n    "), style=style)


def permission_card(item: PermissionPrompt) -> RenderableType:
    parts: list[RenderableType] = []
    if item.description:
        parts.append(Text(item.description, style="italic"))
    parts.append(tool_body(item.tool_name, item.input, item.card.known))
    parts.append(Text.assemble(("Answer: ", "bold"), ("y", "bold green"), " allow  ", ("n", "bold red"),
                               " deny  (or /allow, /deny [reason])"))
    title = f"[bold yellow]Permission:[/] allow [bold]{item.tool_name}[/]?"
    if not item.card.known:
        title += " [dim](tool unknown to this client)[/]"
    return Panel(Group(*parts), title=title, title_align="left", subtitle=item.card.activity,
                 subtitle_align="left", border_style="yellow", expand=True)
