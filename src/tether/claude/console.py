"""What ``tether claude`` itself prints while the TUI is not running (the session is remote): a
banner with the way back, and one line per step of the remote conversation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from tether.protocol.messages import result_reason

DIM: Final = "\x1b[2m"
BOLD: Final = "\x1b[1m"
MAGENTA: Final = "\x1b[35m"
YELLOW: Final = "\x1b[33m"
RED: Final = "\x1b[31m"
RESET: Final = "\x1b[0m"
WIDTH: Final = 200


def _first_line(text: str, width: int = WIDTH) -> str:
    line = " ".join(text.strip().splitlines()[:1]) if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, Mapping) and b.get("type") == "text")
    return ""


def remote_banner(url: str | None) -> str:
    where = f" · {url}" if url else ""
    return (f"\n{MAGENTA}{BOLD}● This session continues on another device{RESET}{MAGENTA}{where}{RESET}\n"
            f"  {BOLD}Press any key to take it back.{RESET}")


def returning(turn_running: bool) -> str:
    if turn_running:
        return f"{YELLOW}  Taking it back after the current turn… (Ctrl-C stops the turn now){RESET}"
    return f"{YELLOW}  Taking it back…{RESET}"


def prompt_line(message: Mapping[str, Any]) -> str:
    inner = message.get("message")
    text = _text(inner.get("content") if isinstance(inner, Mapping) else None)
    return f"{MAGENTA}remote ❯{RESET} {_first_line(text)}"


def output_lines(message: Mapping[str, Any]) -> list[str]:
    """One line per step of the headless run's output worth seeing here."""
    kind = message.get("type")
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, Mapping) else None
    if kind == "assistant" and isinstance(content, list):
        lines = []
        for block in content:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "text" and str(block.get("text", "")).strip():
                lines.append(f"● {_first_line(str(block['text']))}")
            elif block.get("type") == "tool_use":
                lines.append(f"● {block.get('name')}({_tool_summary(block.get('input'))})")
        return lines
    if kind == "control_request":
        request = message.get("request")
        tool = request.get("tool_name") if isinstance(request, Mapping) else None
        return [f"{YELLOW}  ? {tool} needs permission: answer it on the other device{RESET}"]
    if kind == "result":
        if message.get("is_error"):
            why = result_reason(message) or message.get("subtype")
            return [f"{RED}  ✗ the turn ended: {why}{RESET}"]
        return [f"{DIM}  ✓ done{RESET}"]
    return []


def _tool_summary(tool_input: object) -> str:
    if not isinstance(tool_input, Mapping):
        return ""
    for key in ("command", "file_path", "path", "pattern", "url", "description"):
        value = tool_input.get(key)
        if isinstance(value, str):
            return _first_line(value, 80)
    return ""


def notice(text: str) -> str:
    return f"{DIM}tether: {text}{RESET}"
