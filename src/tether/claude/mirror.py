"""Following the TUI's transcript and hooks for ``tether claude`` (docs/protocol.md §14.7): the part
of :class:`~tether.claude.session.ClaudeSession` that reads what happened at the terminal.

Records come in conversation order (:class:`~tether.claude.follower.TranscriptReader`); while the TUI
drives the session (local, or handing off) each is mirrored to the REPL bridge core as its SDK message,
a turn's end sends the turn's ``result``, and the turn's state goes to the hand-off machine. Records the
headless run wrote are only remembered (its output already went up). The hooks say which session the
TUI writes (``SessionStart``) and when a permission dialog opens at the terminal (``PermissionRequest``).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
import uuid as uuidlib
from collections import deque
from collections.abc import Sequence
from typing import Any

from tether.bridge.repl.core import ReplBridgeCore
from tether.claude.follower import LineFollower, TranscriptReader
from tether.protocol import claude_handoff as h
from tether.protocol import messages as m
from tether.protocol.claude_transcript import (
    interrupted_result,
    is_prompt,
    map_record,
    parse_hook_event,
    record_time,
)
from tether.protocol.repl_bridge import is_eligible, select_history

log = logging.getLogger("tether.claude")


class TranscriptMirror:
    machine: h.HandOff
    conversation: deque[dict[str, Any]]
    session_uuid: str | None
    reader: TranscriptReader
    hooks: LineFollower
    poll_s: float
    _tui_started_at: float | None

    @property
    def core(self) -> ReplBridgeCore | None:
        raise NotImplementedError

    def _path_of(self, session_id: str | None) -> pathlib.Path | None:
        raise NotImplementedError

    def _apply(self, actions: Sequence[h.Action]) -> None:
        raise NotImplementedError

    def _publish_status(self) -> None:
        raise NotImplementedError

    def _load_history(self, before: float | None = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The conversation so far (``--resume``): the history flushed when remote control connects;
        and the records written at or after ``before`` (wall clock), which are not history."""
        history: list[dict[str, Any]] = []
        since: list[dict[str, Any]] = []
        for record in self.reader.read(time.monotonic(), final=True):
            stamp = record_time(record)
            if since or (before is not None and stamp is not None and stamp >= before):
                since.append(record)
                continue
            mapped = map_record(record)
            if mapped.message is not None:
                history.append(mapped.message)
        self.conversation.extend(history)
        return history, since

    async def _poll_loop(self) -> None:
        while True:
            self._poll_hooks()
            self._drain()
            await asyncio.sleep(self.poll_s)

    def _poll_hooks(self) -> None:
        for line in self.hooks.poll():
            event = parse_hook_event(line)
            if event is None:
                continue
            if event.name == "SessionStart" and event.session_id and event.session_id != self.session_uuid:
                self._switch_session(event.session_id, event.transcript_path, event.source)
            elif event.name == "PermissionRequest" and self.machine.mode in ("local", "handing_off"):
                self.machine.permission_at_terminal(event.tool_name or "a tool")
                self._publish_status()

    def _switch_session(self, session_id: str, path: str | None, source: str | None) -> None:
        """The TUI writes another session: a resumed one (``--continue``, the picker), whose file so far
        is history; or a new one (``/clear``), mirrored from its first record."""
        log.info("the TUI's session is now %s (%s)", session_id, source)
        self._drain(final=True)
        self.session_uuid = session_id
        self.reader.switch(pathlib.Path(path) if path else self._path_of(session_id))
        if source != "resume":
            return
        # the hook may come after the first prompt typed: what the TUI wrote since it started is not history
        history, since = self._load_history(before=self._tui_started_at)
        core = self.core
        if core is not None:  # remote control is up already: this conversation so far goes first
            core.write_messages(select_history(history, core.history_cap))
        for record in since:
            self._on_record(record)

    def _drain(self, *, final: bool = False) -> None:
        for record in self.reader.read(time.monotonic(), final=final):
            self._on_record(record)
        self._publish_status()

    def _on_record(self, record: dict[str, Any]) -> None:
        mapped = map_record(record)
        mirror = self.machine.mode in ("local", "handing_off")
        core = self.core if mirror else None
        if mapped.message is not None:
            msg = mapped.message
            self.conversation.append(msg)
            if core is not None:
                if is_eligible(msg):
                    core.write_messages([msg])
                else:
                    core.relay(msg)
            if mirror:
                self.machine.permission_at_terminal(None)
                if (is_prompt(msg) or msg.get("type") == m.ASSISTANT) and not self.machine.local_turn:
                    self._apply(self.machine.local_turn_changed(True))  # a prompt command starts with the answer
        if not mirror or not (mapped.kind == "turn_end" or mapped.ends_turn):
            return
        if core is not None:
            if mapped.interrupted:
                core.relay(interrupted_result("", str(uuidlib.uuid4())))
            else:
                core.send_result()
        self._apply(self.machine.local_turn_changed(False))
