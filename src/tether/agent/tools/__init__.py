"""The agent's tools: Bash, Read, Write, Edit, Glob, Grep, LS."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.agent.tools.base import Tool, ToolContext, ToolOutput
from tether.agent.tools.bash import Bash
from tether.agent.tools.files import Edit, Read, Write
from tether.agent.tools.search import LS, Glob, Grep
from tether.protocol.tool_activity import tool_activity

__all__ = ["LS", "Bash", "Edit", "Glob", "Grep", "Read", "Tool", "ToolContext", "ToolOutput", "Write",
           "activity_for", "default_tools"]


def default_tools() -> dict[str, Tool]:
    tools: list[Tool] = [Bash(), Edit(), Glob(), Grep(), LS(), Read(), Write()]
    return {t.name: t for t in tools}


def activity_for(tool_name: str, tool_input: Mapping[str, Any], cwd: str) -> str:
    """The one-line activity text for a tool call ("Editing src/app.py"), for any agent's output."""
    return tool_activity(tool_name, tool_input, cwd)
