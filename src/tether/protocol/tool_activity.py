"""One-line activity texts for tool calls ("Editing src/app.py"), docs/protocol.md §5.

Pure string work: paths inside the session's working directory are shown relative
to it, long arguments are shortened, unknown tools read "Using <name>".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = [
    "MAX_ARGUMENT_LEN",
    "display_path",
    "shorten",
    "tool_activity",
]

MAX_ARGUMENT_LEN: Final = 60

# tool name -> (verb, input keys to try, in order)
_TOOLS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "Read": ("Reading", ("file_path", "path")),
    "Write": ("Writing", ("file_path", "path")),
    "Edit": ("Editing", ("file_path", "path")),
    "MultiEdit": ("Editing", ("file_path", "path")),
    "NotebookEdit": ("Editing", ("notebook_path", "file_path")),
    "Bash": ("Running", ("command",)),
    "Glob": ("Searching for", ("pattern",)),
    "Grep": ("Searching for", ("pattern",)),
    "LS": ("Listing", ("path",)),
    "WebFetch": ("Fetching", ("url",)),
    "WebSearch": ("Searching the web for", ("query",)),
    "Task": ("Running a subagent:", ("description",)),
    "Agent": ("Running a subagent:", ("description",)),
}
_PATH_KEYS: Final = frozenset({"file_path", "path", "notebook_path"})


def shorten(text: str, max_len: int = MAX_ARGUMENT_LEN) -> str:
    """First line of ``text``, cut to ``max_len`` characters with ``…``."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    if len(line) <= max_len:
        return line
    return line[: max_len - 1].rstrip() + "…"


def display_path(path: str, cwd: str | None) -> str:
    """``path`` relative to ``cwd`` when it lies inside it, else unchanged."""
    if cwd:
        root = cwd.rstrip("/")
        if path == root:
            return "."
        if root and path.startswith(root + "/"):
            return path[len(root) + 1 :]
    return path


def tool_activity(name: str, tool_input: Mapping[str, Any] | None, cwd: str | None = None) -> str:
    """The activity line for a ``tool_use`` of tool ``name`` with ``tool_input``."""
    if name == "TodoWrite":
        return "Updating the to-do list"
    verb_keys = _TOOLS.get(name)
    if verb_keys is None:
        return f"Using {name}" if name else "Using a tool"
    verb, keys = verb_keys
    args = tool_input if isinstance(tool_input, Mapping) else {}
    for key in keys:
        value = args.get(key)
        if isinstance(value, str) and value.strip():
            shown = display_path(value, cwd) if key in _PATH_KEYS else value
            return f"{verb} {shorten(shown)}"
    return f"Using {name}"
