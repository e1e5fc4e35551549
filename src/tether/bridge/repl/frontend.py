"""What a front end and the in-process REPL bridge core say to each other (docs/protocol.md §12).

A *front end* owns one conversation with an agent: Tether's terminal REPL, or (next) a mirrored
Claude Code TUI. It hands the core the conversation's messages as they happen
(:meth:`~tether.bridge.repl.core.ReplBridgeCore.write_messages`, the permission questions of
its agent, the end of each turn) and receives, through :class:`FrontEnd`, what remote clients
send: prompts to run as if typed, answers to permission questions, interrupts, model and
permission-mode changes. Everything here is independent of how the front end shows things.

:class:`ReplBridgeConfig` holds the core's timings; ``TETHER_REPL_BRIDGE_JSON`` may set any of
them (e.g. ``{"ws_sleep_threshold_s": 3}``: tests shorten the laptop-sleep thresholds with it).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tether.protocol.bridge_state import BridgeStatus
from tether.protocol.messages import PermissionDecision
from tether.protocol.repl_bridge import DEFAULT_HISTORY_CAP
from tether.protocol.repl_config import CoreKind

Message = dict[str, Any]
CONFIG_ENV = "TETHER_REPL_BRIDGE_JSON"


@dataclass(frozen=True)
class ReplBridgeConfig:
    """Timings of the REPL bridge (seconds); the defaults are Claude Code's (docs/protocol.md §10, §12)."""

    ws_ping_s: float = 10.0
    ws_sleep_threshold_s: float = 60.0
    ws_keep_alive_s: float = 120.0
    poll_sleep_threshold_s: float = 120.0
    oversleep_s: float = 60.0
    connect_timeout_s: float = 15.0
    teardown_archive_timeout_s: float = 1.5
    auto_disable_after_s: float = 10.0
    title_timeout_s: float = 20.0
    login_check_s: float = 60.0
    token_refresh_floor_s: float = 30.0
    status_tick_s: float = 0.25

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReplBridgeConfig:
        """The defaults, with the fields of ``TETHER_REPL_BRIDGE_JSON`` applied (unknown or
        non-positive values raise ``ValueError`` with the field's name)."""
        raw = (os.environ if env is None else env).get(CONFIG_ENV)
        if not raw:
            return cls()
        try:
            values = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"{CONFIG_ENV} is not JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ValueError(f"{CONFIG_ENV} must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in values.items():
            if key not in known:
                raise ValueError(f"{CONFIG_ENV}: unknown field {key!r} (known: {', '.join(sorted(known))})")
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ValueError(f"{CONFIG_ENV}: {key} must be a positive number")
        return dataclasses.replace(cls(), **{k: float(v) for k, v in values.items()})


@dataclass(frozen=True)
class ReplBridgeOptions:
    """What the front end knows about its conversation and how to share it."""

    directory: pathlib.Path
    machine_name: str
    branch: str | None = None
    git_repo_url: str | None = None
    name: str | None = None
    """An explicit title (``/remote-control <name>``, ``--name``): never replaced."""
    renamed: str | None = None
    """A ``/rename`` title given before remote control was on."""
    mirror: bool = False
    """Outbound only (docs/protocol.md §12.9): clients watch, never drive."""
    perpetual: bool = False
    """Keep the session across restarts of the front end (the crash pointer; v1 core)."""
    worker_type: str = "claude_code"
    permission_mode: str | None = None
    home: pathlib.Path | None = None
    history_cap: int = DEFAULT_HISTORY_CAP


@dataclass(frozen=True)
class BridgeInfo:
    """What a front end shows about its bridge."""

    core: CoreKind
    session_id: str | None
    """The ``session_…`` id (web URLs, the Sessions API), once the session exists."""
    session_url: str | None
    connect_url: str | None
    environment_id: str | None
    title: str | None
    title_explicit: bool
    mirror: bool


class FrontEnd(Protocol):
    """The front end, as the core sees it. Every method but :meth:`generate_title` is called on the
    event loop and must return at once (queue work, do not wait for it)."""

    def transcript(self) -> Sequence[Message]:
        """The conversation so far, oldest first (the history flushed when remote control starts)."""

    def deliver_prompt(self, message: Message) -> None:
        """A prompt from a remote client: run it as if typed (keep its ``uuid``), shown as remote."""

    def permission_settled(self, request_id: str, decision: PermissionDecision) -> None:
        """A remote client answered a permission question first: close the local prompt and give
        the decision to the agent."""

    def interrupt(self) -> None:
        """A remote client stopped the turn."""

    def set_model(self, model: str | None) -> str | None:
        """A remote client changed the model; the error text, or None when it was applied."""

    def set_permission_mode(self, mode: str) -> str | None:
        """A remote client changed the permission mode; the error text, or None when applied."""

    def terminal_request(self, subtype: str, request: Mapping[str, Any]) -> str | None:
        """A client asks to move the session between the terminal and remote clients
        (``tether_take_over``, ``tether_return_to_terminal`` with an optional ``interrupt``:
        docs/protocol.md §15); the error text, or None when it was accepted."""

    def bridge_changed(self, status: BridgeStatus | None, info: BridgeInfo | None) -> None:
        """The state, the title or the session changed (redraw the footer); ``None``: remote control is off."""

    def bridge_notice(self, text: str) -> None:
        """Something to tell the person once (the session URL, why remote control stopped)."""

    async def generate_title(self, prompts: Sequence[str]) -> str | None:
        """A title for a conversation of these prompts from the agent's model (None: not available)."""
