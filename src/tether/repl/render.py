"""How the REPL shows a conversation (rich renderables; no I/O here).

Assistant text is Markdown; each tool call is a card (the command, the file, or for ``Edit`` the
diff); tool results are a few dim lines under it; a turn ends with a one-line summary; a
permission question is a card with the answers it takes. Prompts from remote clients are marked
as remote.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.markdown import Markdown
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table
from rich.text import Text

from tether.protocol.messages import result_reason, result_was_interrupted
from tether.protocol.tool_activity import display_path, tool_activity
from tether.repl.commands import COMMANDS, KEYS_HELP

RESULT_LINES: Final = 6
FILE_LINES: Final = 12
ANSWER_HINT: Final = "y yes · a yes, and don't ask again · n no · d <message> no, and say why"


def user_text(message: Mapping[str, Any]) -> str:
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(b.get("text", "") for b in content if isinstance(b, Mapping) and b.get("type") == "text")
    return ""


def remote_prompt(message: Mapping[str, Any]) -> RenderableType:
    return Text.assemble(("remote ❯ ", "bold magenta"), (user_text(message), "magenta"))


def assistant(message: Mapping[str, Any], cwd: str | None) -> Iterator[RenderableType]:
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, Mapping) else None
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "text" and str(block.get("text", "")).strip():
            yield Markdown(str(block["text"]))
        elif block.get("type") == "tool_use":
            name = str(block.get("name", ""))
            raw = block.get("input")
            yield tool_card(name, raw if isinstance(raw, Mapping) else {}, cwd)


def tool_card(name: str, tool_input: Mapping[str, Any], cwd: str | None, *, title: str | None = None,
              style: str = "cyan") -> RenderableType:
    body = tool_body(name, tool_input, cwd)
    heading = title or f"⏺ {tool_activity(name, tool_input, cwd)}"
    return Panel(body, title=heading, title_align="left", border_style=style, expand=False)


def tool_body(name: str, tool_input: Mapping[str, Any], cwd: str | None) -> RenderableType:
    path = tool_input.get("file_path") or tool_input.get("path")
    shown = display_path(str(path), cwd) if isinstance(path, str) else None
    if name == "Bash" and isinstance(tool_input.get("command"), str):
        return Syntax(f"$ {tool_input['command']}", "bash", word_wrap=True, background_color="default")
    if name in ("Edit", "MultiEdit") and isinstance(tool_input.get("old_string"), str):
        return edit_diff(shown or "file", str(tool_input["old_string"]), str(tool_input.get("new_string", "")))
    if name == "Write" and isinstance(tool_input.get("content"), str):
        text = str(tool_input["content"])
        lines = text.splitlines()
        more = f"\n… (+{len(lines) - FILE_LINES} lines)" if len(lines) > FILE_LINES else ""
        lexer = Syntax.guess_lexer(str(path or ""), text) if path else "text"
        return Group(Text(shown or "", style="bold"),
                     Syntax("\n".join(lines[:FILE_LINES]) + more, lexer, background_color="default"))
    pairs = [f"{k}: {v}" for k, v in tool_input.items() if isinstance(v, str | int | float | bool)]
    return Text("\n".join(pairs[:6]) or name, style="dim")


def edit_diff(path: str, old: str, new: str) -> RenderableType:
    diff = difflib.unified_diff(old.splitlines(), new.splitlines(), f"a/{path}", f"b/{path}", lineterm="", n=2)
    return Syntax("\n".join(diff) or "(no change)", "diff", background_color="default")


def tool_results(message: Mapping[str, Any]) -> Iterator[RenderableType]:
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, Mapping) else None
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, Mapping) or block.get("type") != "tool_result":
            continue
        raw = block.get("content")
        text = raw if isinstance(raw, str) else "\n".join(
            b.get("text", "") for b in raw if isinstance(b, Mapping)) if isinstance(raw, list) else ""
        lines = text.splitlines() or [""]
        shown = lines[:RESULT_LINES] + ([f"… (+{len(lines) - RESULT_LINES} lines)"] if len(lines) > RESULT_LINES else [])
        style = "red" if block.get("is_error") else "dim"
        yield Text("\n".join(("  ⎿ " if i == 0 else "    ") + line for i, line in enumerate(shown)), style=style)


def turn_end(result: Mapping[str, Any]) -> RenderableType:
    seconds = (result.get("duration_ms") or 0) / 1000.0
    cost = result.get("total_cost_usd") or 0.0
    if result.get("is_error") or result.get("subtype") != "success":
        label = "interrupted" if result_was_interrupted(result) else "failed"
        why = result_reason(result)
        why = "" if why.lower() == label else why
        return Text(f"✗ {label}{': ' + why if why else ''} · {seconds:.1f} s", style="red")
    return Text(f"✓ {seconds:.1f} s · ${cost:.4f}", style="dim green")


def permission_card(request: Mapping[str, Any], cwd: str | None) -> RenderableType:
    inner = request.get("request") if isinstance(request.get("request"), Mapping) else {}
    assert isinstance(inner, Mapping)
    name = str(inner.get("tool_name", "a tool"))
    tool_input = inner.get("input") if isinstance(inner.get("input"), Mapping) else {}
    assert isinstance(tool_input, Mapping)
    what = inner.get("description") or tool_activity(name, tool_input, cwd)
    body = Group(tool_body(name, tool_input, cwd), Text(ANSWER_HINT, style="bold yellow"))
    return Panel(body, title=f"? Allow {name}: {what}", title_align="left", border_style="yellow", expand=False)


def help_table() -> RenderableType:
    table = Table(show_header=False, box=None, pad_edge=False)
    for spec in COMMANDS:
        aliases = f" (/{', /'.join(spec.aliases)})" if spec.aliases else ""
        table.add_row(Text(spec.usage + aliases, style="bold"), spec.help)
    for key, what in KEYS_HELP:
        table.add_row(Text(key, style="bold"), what)
    return table


def notice(text: str, style: str = "yellow") -> RenderableType:
    return Text(text, style=style)

