"""What every tool is: a schema, a permission class, an activity line and an async run."""

from __future__ import annotations

import asyncio
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from tether.agent.permissions import CallTarget, PermissionClass
from tether.protocol.permission_rules import RuleTarget
from tether.protocol.tool_activity import tool_activity

MAX_OUTPUT_CHARS: Final = 30_000
_JSON_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "array": (list,), "object": (dict,),
}


@dataclass(frozen=True)
class ToolOutput:
    """``content`` goes to the model; ``structured`` is the CLI's ``tool_use_result``."""

    content: str
    is_error: bool = False
    structured: Any = None

    @classmethod
    def error(cls, message: str) -> ToolOutput:
        return cls(message, True, f"Error: {message}")


@dataclass
class ToolContext:
    cwd: str
    env: Callable[[], Mapping[str, str]] = field(default=lambda: dict(os.environ))
    max_output_chars: int = MAX_OUTPUT_CHARS
    default_timeout_s: float = 120.0
    max_timeout_s: float = 600.0
    wrap: Callable[[list[str]], list[str]] | None = None
    """Wraps the command lines of Bash (``tether agent --sandbox``: bubblewrap)."""


def resolve_path(cwd: str, path: str) -> str:
    return os.path.normpath(os.path.join(cwd, os.path.expanduser(path)))


def display_path(cwd: str, path: str) -> str:
    """``path`` relative to ``cwd`` when it is inside it, else absolute."""
    absolute = resolve_path(cwd, path)
    rel = os.path.relpath(absolute, cwd)
    return absolute if rel.startswith("..") else rel


def object_schema(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """A tool's input schema: a closed object (:func:`validate_input` refuses unknown keys)."""
    return {"type": "object", "properties": properties, "required": list(required), "additionalProperties": False}


def validate_input(schema: Mapping[str, Any], value: Mapping[str, Any]) -> str | None:
    """The first problem with ``value`` against a flat JSON schema, or None."""
    props: Mapping[str, Any] = schema.get("properties", {})
    for key in schema.get("required", ()):
        if key not in value:
            return f"The required parameter `{key}` is missing"
    for key, item in value.items():
        spec = props.get(key)
        if spec is None:
            if schema.get("additionalProperties", True) is False:
                return f"An unexpected parameter `{key}` was provided"
            continue
        expected = spec.get("type")
        types = _JSON_TYPES.get(expected) if isinstance(expected, str) else None
        if types is None:
            continue
        ok = isinstance(item, types) and not (expected in ("integer", "number") and isinstance(item, bool))
        if not ok:
            return f"The parameter `{key}` type is expected as `{expected}` but provided as `{type(item).__name__}`"
    return None


class Tool(ABC):
    name: ClassVar[str]
    description: ClassVar[str]
    input_schema: ClassVar[dict[str, Any]]
    permission_class: ClassVar[PermissionClass]

    def spec(self) -> dict[str, Any]:
        """The tool definition sent to the Messages API."""
        return {"name": self.name, "description": self.description, "input_schema": self.input_schema}

    def validate(self, tool_input: Mapping[str, Any]) -> str | None:
        return validate_input(self.input_schema, tool_input)

    def activity(self, tool_input: Mapping[str, Any], cwd: str) -> str:
        """One line for status displays: "Editing src/app.py", "Running ls -la" (shared with the host)."""
        return tool_activity(self.name, tool_input, cwd)

    def target(self, tool_input: Mapping[str, Any], cwd: str) -> CallTarget:
        """What permission rules are matched against (default: the file path)."""
        raw = tool_input.get("file_path") or tool_input.get("path")
        if not isinstance(raw, str) or not raw:
            is_dir = self.permission_class == "read" and "file_path" not in self.input_schema["properties"]
            return CallTarget(RuleTarget("path", (".", cwd)), cwd if is_dir else None, is_dir)
        absolute = resolve_path(cwd, raw)
        rel = os.path.relpath(absolute, cwd)
        is_dir = "file_path" not in self.input_schema["properties"]
        return CallTarget(RuleTarget("path", (rel, absolute)), absolute, is_dir)

    def rule_content(self, tool_input: Mapping[str, Any], cwd: str) -> str | None:
        """The content an "always allow" suggestion would name."""
        target = self.target(tool_input, cwd)
        return target.rule_target.candidates[0] if target.rule_target.candidates else None

    def permission_description(self, tool_input: Mapping[str, Any], cwd: str) -> str:
        raw = tool_input.get("file_path") or tool_input.get("path")
        return display_path(cwd, raw) if isinstance(raw, str) and raw else self.activity(tool_input, cwd)

    @abstractmethod
    async def run(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        """Run the call. Must clean up (e.g. kill processes) when cancelled."""


class ThreadedTool(Tool):
    """A tool whose work is blocking file-system calls: run it in a worker thread so the
    event loop (the session's socket) keeps going."""

    async def run(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        return await asyncio.to_thread(self.run_blocking, tool_input, ctx)

    @abstractmethod
    def run_blocking(self, tool_input: Mapping[str, Any], ctx: ToolContext) -> ToolOutput:
        """The call's work, in a worker thread."""
