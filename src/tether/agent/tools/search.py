"""Glob, Grep and LS: read-only search tools (bounded walks in a worker thread)."""

from __future__ import annotations

import fnmatch
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar, Final

from tether.agent.permissions import PermissionClass
from tether.agent.tools.base import (
    ThreadedTool,
    ToolContext,
    ToolOutput,
    display_path,
    object_schema,
    resolve_path,
)

MAX_RESULTS: Final = 100
MAX_FILES_WALKED: Final = 50_000
MAX_GREP_FILE_BYTES: Final = 5 * 1024 * 1024
MAX_LS_ENTRIES: Final = 1000
WALK_DEADLINE_S: Final = 20.0
SKIP_DIRS: Final = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", ".mypy_cache"})


def _walk_files(root: str, deadline: float) -> Iterator[str]:
    seen = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            seen += 1
            if seen > MAX_FILES_WALKED or time.monotonic() > deadline:
                return
            yield os.path.join(dirpath, name)


def _search_root(tool_input: Mapping[str, Any], ctx: ToolContext) -> str:
    raw = tool_input.get("path")
    return resolve_path(ctx.cwd, raw) if isinstance(raw, str) and raw else ctx.cwd


class Glob(ThreadedTool):
    name: ClassVar[str] = "Glob"
    description: ClassVar[str] = (
        "Find files by glob pattern (e.g. `**/*.py`, `src/**/test_*.py`), newest first, at most "
        f"{MAX_RESULTS} results."
    )
    input_schema: ClassVar[dict[str, Any]] = object_schema(
        {
            "pattern": {"type": "string", "description": "The glob pattern"},
            "path": {"type": "string", "description": "Folder to search (default: the cwd)"},
        },
        "pattern",
    )
    permission_class: ClassVar[PermissionClass] = "read"


    def run_blocking(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        started = time.monotonic()
        root = _search_root(tool_input, ctx)
        pattern = str(tool_input["pattern"])
        if not os.path.isdir(root):
            return ToolOutput.error(f"Directory does not exist: {root}")
        if os.path.isabs(pattern):
            return ToolOutput.error("pattern must be relative; put the folder in `path`.")
        found: list[tuple[float, str]] = []
        try:
            for i, p in enumerate(Path(root).glob(pattern)):
                if i >= MAX_FILES_WALKED or time.monotonic() - started > WALK_DEADLINE_S:
                    break
                if any(part in SKIP_DIRS for part in p.relative_to(root).parts[:-1]) or not p.is_file():
                    continue
                found.append((p.stat().st_mtime, str(p)))
        except (OSError, ValueError) as exc:
            return ToolOutput.error(f"glob failed: {exc}")
        found.sort(key=lambda t: (-t[0], t[1]))
        names = [p for _, p in found[:MAX_RESULTS]]
        truncated = len(found) > MAX_RESULTS
        text = "\n".join(names) if names else "No files found"
        if truncated:
            text += f"\n(Results are truncated: {len(found) - MAX_RESULTS} more. Use a narrower pattern.)"
        structured = {"filenames": names, "durationMs": int((time.monotonic() - started) * 1000),
                      "numFiles": len(names), "truncated": truncated}
        return ToolOutput(text, False, structured)


class Grep(ThreadedTool):
    name: ClassVar[str] = "Grep"
    description: ClassVar[str] = (
        "Search file contents with a regular expression (Python syntax). `output_mode`: files_with_matches "
        "(default), content (matching lines with numbers) or count. `glob` filters file names (e.g. `*.py`)."
    )
    input_schema: ClassVar[dict[str, Any]] = object_schema(
        {
            "pattern": {"type": "string", "description": "The regular expression"},
            "path": {"type": "string", "description": "File or folder to search (default: the cwd)"},
            "glob": {"type": "string", "description": "Only files whose name matches this glob"},
            "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
            "-i": {"type": "boolean", "description": "Case-insensitive"},
            "head_limit": {"type": "integer", "description": "At most this many output lines/entries"},
        },
        "pattern",
    )
    permission_class: ClassVar[PermissionClass] = "read"


    def run_blocking(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        started = time.monotonic()
        root = _search_root(tool_input, ctx)
        mode = str(tool_input.get("output_mode") or "files_with_matches")
        if mode not in ("content", "files_with_matches", "count"):
            return ToolOutput.error(f"unknown output_mode {mode!r}")
        try:
            rx = re.compile(str(tool_input["pattern"]), re.IGNORECASE if tool_input.get("-i") else 0)
        except re.error as exc:
            return ToolOutput.error(f"invalid regular expression: {exc}")
        limit = int(tool_input.get("head_limit") or (MAX_RESULTS * 5 if mode == "content" else MAX_RESULTS))
        name_glob = tool_input.get("glob")
        if os.path.isfile(root):
            files: Iterator[str] = iter([root])
        elif os.path.isdir(root):
            files = _walk_files(root, started + WALK_DEADLINE_S)
        else:
            return ToolOutput.error(f"Path does not exist: {root}")
        matches: list[str] = []
        lines_out: list[str] = []
        counts: list[str] = []
        for path in files:
            if isinstance(name_glob, str) and name_glob and not (
                    fnmatch.fnmatch(os.path.basename(path), name_glob)
                    or fnmatch.fnmatch(os.path.relpath(path, root), name_glob)):
                continue
            try:
                if os.path.getsize(path) > MAX_GREP_FILE_BYTES:
                    continue
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            if b"\x00" in data[:8192]:
                continue
            hits = [(n, line) for n, line in enumerate(data.decode("utf-8", "replace").splitlines(), start=1)
                    if rx.search(line)]
            if not hits:
                continue
            matches.append(path)
            shown = display_path(ctx.cwd, path)
            if mode == "content":
                lines_out.extend(f"{shown}:{n}:{line[:500]}" for n, line in hits)
            elif mode == "count":
                counts.append(f"{shown}:{len(hits)}")
            if (len(matches) >= limit and mode != "content") or len(lines_out) >= limit:
                break
        if mode == "content":
            body = lines_out[:limit]
            text = "\n".join(body) if body else "No matches found"
        elif mode == "count":
            body = counts[:limit]
            text = "\n".join(body) if body else "No matches found"
        else:
            body = matches[:limit]
            text = (f"Found {len(body)} file{'s' if len(body) != 1 else ''}\n" + "\n".join(body)) if body \
                else "No files found"
        structured = {"mode": mode, "numFiles": len(matches), "filenames": matches[:limit],
                      "content": "\n".join(body) if mode != "files_with_matches" else "",
                      "numLines": len(body)}
        return ToolOutput(text, False, structured)


class LS(ThreadedTool):
    name: ClassVar[str] = "LS"
    description: ClassVar[str] = "List a folder (folders end with /). `ignore` is a list of globs to leave out."
    input_schema: ClassVar[dict[str, Any]] = object_schema(
        {
            "path": {"type": "string", "description": "The folder (default: the cwd)"},
            "ignore": {"type": "array", "items": {"type": "string"}, "description": "Globs to leave out"},
        },
    )
    permission_class: ClassVar[PermissionClass] = "read"


    def run_blocking(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        root = _search_root(tool_input, ctx)
        ignore = [g for g in tool_input.get("ignore") or [] if isinstance(g, str)]
        try:
            with os.scandir(root) as it:
                entries = sorted(
                    (e.name + ("/" if e.is_dir(follow_symlinks=False) else "")) for e in it
                    if not any(fnmatch.fnmatch(e.name, g) for g in ignore)
                )
        except FileNotFoundError:
            return ToolOutput.error(f"Directory does not exist: {root}")
        except NotADirectoryError:
            return ToolOutput.error(f"{root} is not a directory.")
        except OSError as exc:
            return ToolOutput.error(f"cannot list {root}: {exc.strerror or exc}")
        shown = entries[:MAX_LS_ENTRIES]
        text = f"{root}/\n" + "\n".join(f"  - {e}" for e in shown) if shown else f"{root}/ is empty"
        if len(entries) > MAX_LS_ENTRIES:
            text += f"\n(… {len(entries) - MAX_LS_ENTRIES} more entries)"
        return ToolOutput(text, False, {"path": root, "entries": shown, "truncated": len(entries) > len(shown)})
