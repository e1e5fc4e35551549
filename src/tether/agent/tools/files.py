"""Read, Write and Edit: file tools (the blocking file work runs in a worker thread)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from tether.agent.permissions import PermissionClass
from tether.agent.tools.base import ThreadedTool, ToolContext, ToolOutput, object_schema, resolve_path

MAX_READ_LINES: Final = 2000
MAX_LINE_CHARS: Final = 2000
MAX_READ_BYTES: Final = 10 * 1024 * 1024


def _file_path(tool_input: Mapping[str, Any], ctx: ToolContext) -> str:
    return resolve_path(ctx.cwd, str(tool_input["file_path"]))


def _at_least_one(tool_input: Mapping[str, Any], key: str, default: int) -> int:
    """``tool_input[key]`` as an int of at least 1; ``default`` when missing or 0."""
    return max(1, int(tool_input.get(key) or default))


def _is_binary(data: bytes) -> bool:
    return b"\x00" in data[:8192]


class Read(ThreadedTool):
    name: ClassVar[str] = "Read"
    description: ClassVar[str] = (
        "Read a text file. Lines are numbered (cat -n style). `offset` is the first line (1-based), `limit` "
        f"the number of lines (default {MAX_READ_LINES})."
    )
    input_schema: ClassVar[dict[str, Any]] = object_schema(
        {
            "file_path": {"type": "string", "description": "Path of the file (absolute or relative to the cwd)"},
            "offset": {"type": "integer", "description": "First line to read (1-based)"},
            "limit": {"type": "integer", "description": "Number of lines to read"},
        },
        "file_path",
    )
    permission_class: ClassVar[PermissionClass] = "read"


    def run_blocking(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        path = _file_path(tool_input, ctx)
        try:
            if os.path.isdir(path):
                return ToolOutput.error(f"{path} is a directory; use LS to list it.")
            if os.path.getsize(path) > MAX_READ_BYTES:
                return ToolOutput.error(f"{path} is larger than {MAX_READ_BYTES} bytes; read it with Bash.")
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return ToolOutput.error(f"File does not exist: {path}")
        except OSError as exc:
            return ToolOutput.error(f"cannot read {path}: {exc.strerror or exc}")
        if _is_binary(data):
            return ToolOutput.error(f"{path} looks like a binary file.")
        lines = data.decode("utf-8", "replace").splitlines()
        offset = _at_least_one(tool_input, "offset", 1)
        limit = _at_least_one(tool_input, "limit", MAX_READ_LINES)
        chosen = lines[offset - 1: offset - 1 + limit]
        numbered = "\n".join(
            f"{n:6d}\t{line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + '…'}"
            for n, line in enumerate(chosen, start=offset)
        )
        content = numbered if chosen else "<system-reminder>The file is empty or the offset is past its end.</system-reminder>"
        structured = {"type": "text", "file": {"filePath": path, "content": "\n".join(chosen),
                                               "numLines": len(chosen), "startLine": offset,
                                               "totalLines": len(lines)}}
        return ToolOutput(content, False, structured)


class Write(ThreadedTool):
    name: ClassVar[str] = "Write"
    description: ClassVar[str] = "Create or overwrite a file with the given content (parent folders are created)."
    input_schema: ClassVar[dict[str, Any]] = object_schema(
        {
            "file_path": {"type": "string", "description": "Path of the file (absolute or relative to the cwd)"},
            "content": {"type": "string", "description": "The whole new content"},
        },
        "file_path", "content",
    )
    permission_class: ClassVar[PermissionClass] = "edit"


    def run_blocking(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        path = _file_path(tool_input, ctx)
        content = str(tool_input["content"])
        original: str | None = None
        try:
            if os.path.isdir(path):
                return ToolOutput.error(f"{path} is a directory.")
            if os.path.exists(path):
                with open(path, encoding="utf-8", errors="replace") as fh:
                    original = fh.read()
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            _atomic_write(path, content)
        except OSError as exc:
            return ToolOutput.error(f"cannot write {path}: {exc.strerror or exc}")
        kind = "create" if original is None else "update"
        text = (f"File created successfully at: {path}" if original is None
                else f"The file {path} has been updated successfully.")
        structured: dict[str, Any] = {"type": kind, "filePath": path, "content": content, "structuredPatch": [],
                      "originalFile": original, "userModified": False}
        return ToolOutput(text, False, structured)


def _atomic_write(path: str, content: str) -> None:
    tmp = f"{path}.tether-tmp-{os.getpid()}"
    mode = os.stat(path).st_mode & 0o7777 if os.path.exists(path) else None
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(content)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


class Edit(ThreadedTool):
    name: ClassVar[str] = "Edit"
    description: ClassVar[str] = (
        "Replace an exact string in a file. `old_string` must occur exactly once unless `replace_all` is true; "
        "an empty `old_string` creates a new file with `new_string`."
    )
    input_schema: ClassVar[dict[str, Any]] = object_schema(
        {
            "file_path": {"type": "string", "description": "Path of the file (absolute or relative to the cwd)"},
            "old_string": {"type": "string", "description": "The exact text to replace"},
            "new_string": {"type": "string", "description": "The replacement"},
            "replace_all": {"type": "boolean", "description": "Replace every occurrence (default false)"},
        },
        "file_path", "old_string", "new_string",
    )
    permission_class: ClassVar[PermissionClass] = "edit"


    def run_blocking(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        path = _file_path(tool_input, ctx)
        old, new = str(tool_input["old_string"]), str(tool_input["new_string"])
        replace_all = bool(tool_input.get("replace_all", False))
        if old == new:
            return ToolOutput.error("No changes to make: old_string and new_string are exactly the same.")
        try:
            exists = os.path.exists(path)
            if not exists:
                if old:
                    return ToolOutput.error(f"File does not exist: {path}")
                os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
                _atomic_write(path, new)
                return ToolOutput(f"File created successfully at: {path}", False, _edit_result(
                    path, old, new, None, replace_all))
            with open(path, encoding="utf-8", newline="") as fh:
                original = fh.read()
        except UnicodeDecodeError:
            return ToolOutput.error(f"{path} is not a UTF-8 text file.")
        except OSError as exc:
            return ToolOutput.error(f"cannot edit {path}: {exc.strerror or exc}")
        if not old:
            return ToolOutput.error("Cannot create a new file: the file already exists.")
        count = original.count(old)
        if count == 0:
            return ToolOutput.error(f"String to replace not found in file.\nString: {old}")
        if count > 1 and not replace_all:
            return ToolOutput.error(
                f"Found {count} matches of the string to replace, but replace_all is false. To replace all "
                "occurrences, set replace_all to true. To replace only one, add more context to make it unique."
                f"\nString: {old}")
        updated = original.replace(old, new) if replace_all else original.replace(old, new, 1)
        try:
            _atomic_write(path, updated)
        except OSError as exc:
            return ToolOutput.error(f"cannot write {path}: {exc.strerror or exc}")
        what = f"All {count} occurrences" if replace_all and count > 1 else "The edit"
        return ToolOutput(f"The file {path} has been updated successfully. ({what} applied.)", False,
                          _edit_result(path, old, new, original, replace_all))


def _edit_result(path: str, old: str, new: str, original: str | None, replace_all: bool) -> dict[str, Any]:
    return {"filePath": path, "oldString": old, "newString": new, "originalFile": original,
            "structuredPatch": [], "userModified": False, "replaceAll": replace_all}
