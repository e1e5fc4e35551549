"""What ``tether agent`` was asked to do (parsed command line and environment)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from typing import Final

from tether.protocol.messages import DEFAULT_MAX_LINE_BYTES

MAX_QUEUED_PROMPTS: Final = 1000
DEFAULT_MAX_TOKENS: Final = 16_000


@dataclass
class AgentOptions:
    cwd: str
    model: str | None = None
    permission_mode: str = "default"
    prompt_tool: bool = False
    """``--permission-prompt-tool stdio``: ask over stdout; else calls that need permission are denied."""
    replay_user_messages: bool = False
    include_partial_messages: bool = False
    session_id: str | None = None
    system_prompt: str | None = None
    append_system_prompt: str | None = None
    allowed_tools: list[str] = field(default_factory=list)
    disallowed_tools: list[str] = field(default_factory=list)
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    max_queued_prompts: int = MAX_QUEUED_PROMPTS
    max_tokens: int = DEFAULT_MAX_TOKENS
    emit_session_state: bool = False
    sandbox: str | None = None
    """``--sandbox``: the bubblewrap executable Bash commands run under (only the working directory
    and a private /tmp are writable)."""
    """``system/session_state_changed`` lines, as the CLI writes with CLAUDE_CODE_SDK_READS_SESSION_STATE=1."""


def default_system_prompt(cwd: str) -> str:
    return (
        "You are Tether's coding agent, working on the user's machine through tools (Bash, Read, Write, Edit, "
        "Glob, Grep, LS). Work step by step, prefer small verifiable changes, and say plainly what you did.\n\n"
        f"Environment:\n - Working directory: {cwd}\n - Platform: {platform.system().lower()}\n"
        f" - Shell: bash\n - Is a git repository: {os.path.isdir(os.path.join(cwd, '.git'))}"
    )
