"""Claude Code's transcript files, as ``tether claude`` reads them (docs/protocol.md §14.7). Pure.

The interactive ``claude`` TUI writes its conversation as JSON lines to
``<config dir>/projects/<slug of the cwd>/<session uuid>.jsonl``; a headless
``claude -p --resume <uuid>`` appends to the same file. ``tether claude`` follows that file
and mirrors what happened at the terminal to the Tether session. This module holds the
rules, measured with the pinned CLI (2.1.197):

* :func:`project_slug`: the directory name of a working directory (every character that
  is not an ASCII letter or digit becomes ``-``; names over 200 characters are cut and get
  a hash suffix, as the CLI does);
* :func:`map_record`: which records are mirrored and as what SDK message (``user`` prompts
  and tool results, ``assistant`` messages, slash and ``!`` commands with their output as
  ``system/local_command``), which only mark
  the end of a turn (``system/turn_duration``, an interrupt marker), and which are skipped
  (``mode``, ``permission-mode``, ``file-history-snapshot``, ``attachment``, ``last-prompt``,
  ``queue-operation``, meta and side-chain messages …). Uuids are kept: the headless run's
  stream-json output carries the same uuids as its transcript records, which is how the
  bridge recognises the records it already relayed;
* :class:`ChainOrder`: records in conversation order. The file's line order is not always
  the conversation's (the first turn of a new session was written assistant first); each
  record names its ``parentUuid``, so a record waits until its parent was seen, or for at
  most ``hold_s`` when the parent never comes;
* :func:`reading_plan`: what a follower does next given the file's inode and size (read on,
  wait, or start over after the file was truncated or replaced);
* :func:`parse_hook_event`: the hook events ``tether claude`` asks the TUI to append to a file
  (``SessionStart`` names the session and its transcript; ``PermissionRequest`` means a
  permission dialog is open at the terminal).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Literal

from tether.protocol.uuid_ring import BoundedUUIDSet

__all__ = [
    "HOOK_EVENTS",
    "INTERRUPT_MARKER",
    "SLUG_MAX",
    "ChainOrder",
    "FileState",
    "HookEvent",
    "Mapped",
    "MappedKind",
    "Message",
    "ReadPlan",
    "Record",
    "clean_local_command",
    "config_dir",
    "interrupted_result",
    "is_local_command_text",
    "is_prompt",
    "map_record",
    "parse_hook_event",
    "parse_line",
    "project_slug",
    "reading_plan",
    "record_time",
    "record_uuid",
    "transcript_path",
]

Record = dict[str, Any]
Message = dict[str, Any]

SLUG_MAX: Final = 200
INTERRUPT_MARKER: Final = "[Request interrupted by user"
_ANSI: Final = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)")


# ---- where the transcript is -----------------------------------------------------------------------


def _utf16_units(text: str) -> list[int]:
    data = text.encode("utf-16-le", "surrogatepass")
    return [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]


def _js_string_hash(text: str) -> int:
    """``h = (h << 5) - h + charCode | 0`` over UTF-16 code units (the CLI's JavaScript)."""
    h = 0
    for unit in _utf16_units(text):
        h = (h * 31 + unit) & 0xFFFFFFFF
    return h - (1 << 32) if h & 0x80000000 else h


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while True:  # at least one digit: 0 is "0"
        n, rest = divmod(n, 36)
        out.append(digits[rest])
        if not n:
            return "".join(reversed(out))


def project_slug(cwd: str) -> str:
    """The directory under ``projects/`` that holds a working directory's transcripts."""
    units = _utf16_units(cwd)
    slug = "".join(chr(u) if chr(u).isascii() and chr(u).isalnum() else "-" for u in units)
    if len(slug) <= SLUG_MAX:
        return slug
    return f"{slug[:SLUG_MAX]}-{_base36(abs(_js_string_hash(cwd)))}"


def config_dir(env: Mapping[str, str], home: str) -> str:
    """``$CLAUDE_CONFIG_DIR``, else ``~/.claude``."""
    configured = env.get("CLAUDE_CONFIG_DIR")
    return configured if configured else home.rstrip("/") + "/.claude"


def transcript_path(config: str, cwd: str, session_id: str) -> str:
    return f"{config.rstrip('/')}/projects/{project_slug(cwd)}/{session_id}.jsonl"


# ---- what a record becomes --------------------------------------------------------------------------

MappedKind = Literal["message", "turn_end", "skip"]


@dataclass(frozen=True)
class Mapped:
    """``message``: mirror :attr:`message`; ``turn_end``: no message, but the turn at the terminal
    ended; ``skip``: nothing. :attr:`ends_turn` is also set on a mirrored interrupt marker."""

    kind: MappedKind
    message: Message | None = None
    ends_turn: bool = False
    interrupted: bool = False
    reason: str = ""


def _skip(reason: str) -> Mapped:
    return Mapped("skip", reason=reason)


def record_uuid(record: Mapping[str, Any]) -> str | None:
    uid = record.get("uuid")
    return uid if isinstance(uid, str) and uid else None


def record_time(record: Mapping[str, Any]) -> float | None:
    """A record's ``timestamp`` (ISO 8601, UTC) as seconds since the epoch, or None."""
    stamp = record.get("timestamp")
    if not isinstance(stamp, str):
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _text_of(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")


def _is_tool_result(content: object) -> bool:
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


_LOCAL_TAGS: Final = re.compile(r"^\s*<(command-name|command-message|local-command-stdout|local-command-stderr|"
                                r"bash-input|bash-stdout|bash-stderr)>")


def is_local_command_text(content: object) -> bool:
    """A user record that only shows a slash command or ``!`` shell command and its output (the TUI
    writes ``/exit``, ``!ls`` … this way): not a prompt for the model."""
    return isinstance(content, str) and _LOCAL_TAGS.match(content) is not None


def clean_local_command(content: str) -> str:
    """The readable part of a local command record: ``/name args`` for a slash command, ``! cmd``
    for a shell command, the text of its ``…-stdout`` / ``…-stderr`` for its output (ANSI removed)."""
    text = _ANSI.sub("", content)
    name = re.search(r"<command-name>(.*?)</command-name>", text, re.S)
    if name:
        args = re.search(r"<command-args>(.*?)</command-args>", text, re.S)
        line = name.group(1).strip()
        extra = args.group(1).strip() if args else ""
        return f"{line} {extra}".strip()
    bash = re.search(r"<bash-input>(.*?)</bash-input>", text, re.S)
    if bash:
        return f"! {bash.group(1).strip()}"
    parts = re.findall(r"<(?:local-command|bash)-(?:stdout|stderr)>(.*?)</(?:local-command|bash)-(?:stdout|stderr)>",
                       text, re.S)
    if parts or _LOCAL_TAGS.match(text):
        return "\n".join(p.strip() for p in parts if p.strip())
    return text.strip()


def _local_command(uid: str, content: str) -> Mapped:
    text = clean_local_command(content)
    if not text:
        return _skip("an empty local command")
    return Mapped("message", {"type": "system", "subtype": "local_command", "uuid": uid, "session_id": "",
                              "content": text})


def map_record(record: Mapping[str, Any]) -> Mapped:
    """What one transcript record means for the mirror."""
    kind = record.get("type")
    uid = record_uuid(record)
    if kind not in ("user", "assistant", "system"):
        return _skip(f"record type {kind!r}")
    if uid is None:
        return _skip("no uuid")
    if record.get("isSidechain"):
        return _skip("a sub-agent's message")
    if kind == "system":
        return _map_system(record, uid)
    inner = record.get("message")
    if not isinstance(inner, dict):
        return _skip("no message")
    if kind == "assistant":
        return Mapped("message", {"type": "assistant", "uuid": uid, "session_id": "", "parent_tool_use_id": None,
                                  "message": inner})
    return _map_user(record, uid, inner)


def _map_user(record: Mapping[str, Any], uid: str, inner: dict[str, Any]) -> Mapped:
    if record.get("isMeta") or record.get("isCompactSummary") or record.get("isVisibleInTranscriptOnly"):
        return _skip("a meta message")
    content = inner.get("content")
    if not isinstance(content, str | list):
        return _skip("no content")
    if is_local_command_text(content):
        assert isinstance(content, str)
        return _local_command(uid, content)
    msg: Message = {"type": "user", "uuid": uid, "session_id": "", "parent_tool_use_id": None,
                    "message": {"role": "user", "content": content}}
    if _is_tool_result(content):
        result = record.get("toolUseResult")
        if result is not None:
            msg["tool_use_result"] = result
        return Mapped("message", msg)
    if _text_of(content).startswith(INTERRUPT_MARKER):
        return Mapped("message", msg, ends_turn=True, interrupted=True)
    return Mapped("message", msg)


def _map_system(record: Mapping[str, Any], uid: str) -> Mapped:
    subtype = record.get("subtype")
    if subtype == "turn_duration":
        return Mapped("turn_end")
    if subtype == "local_command":
        content = record.get("content")
        return _local_command(uid, content) if isinstance(content, str) else _skip("an empty local command")
    if subtype == "compact_boundary":
        msg: Message = {"type": "system", "subtype": "compact_boundary", "uuid": uid, "session_id": ""}
        meta = record.get("compactMetadata")
        if isinstance(meta, dict):
            msg["compact_metadata"] = meta
        return Mapped("message", msg)
    return _skip(f"system/{subtype}")


def is_prompt(message: Mapping[str, Any]) -> bool:
    """A person's prompt (not a tool result, not an interrupt marker, not a local command): a
    turn starts."""
    if message.get("type") != "user":
        return False
    inner = message.get("message")
    content = inner.get("content") if isinstance(inner, Mapping) else None
    if not isinstance(content, str | list):
        return False  # nothing was asked
    return not _is_tool_result(content) and not _text_of(content).startswith(INTERRUPT_MARKER)


def interrupted_result(session_id: str, uid: str) -> Message:
    """The ``result`` of a turn stopped at the terminal (Esc): clients stop showing it as running."""
    return {"type": "result", "subtype": "error_during_execution", "is_error": True, "duration_ms": 0,
            "duration_api_ms": 0, "num_turns": 0, "stop_reason": None, "total_cost_usd": 0,
            "usage": {"input_tokens": 0, "output_tokens": 0}, "permission_denials": [],
            "terminal_reason": "aborted_tools", "errors": ["Interrupted at the terminal"],
            "session_id": session_id, "uuid": uid}


# ---- conversation order ----------------------------------------------------------------------------


@dataclass
class _Held:
    record: Record
    since: float
    order: int


@dataclass
class ChainOrder:
    """Releases records (those with a ``uuid``) parents first. A record whose parent was not
    seen yet is held until the parent arrives, or for ``hold_s`` (then released in file
    order: the parent may never be written). A uuid seen before is never released again."""

    hold_s: float = 2.0
    capacity: int = 100_000
    _known: BoundedUUIDSet = field(init=False)
    _held: dict[str, _Held] = field(default_factory=dict)  # by the record's own uuid
    _waiting: dict[str, list[str]] = field(default_factory=dict)  # parent uuid → held child uuids
    _order: int = 0

    def __post_init__(self) -> None:
        self._known = BoundedUUIDSet(self.capacity)

    @property
    def held(self) -> int:
        return len(self._held)

    def known(self, uid: str) -> bool:
        return uid in self._known

    def push(self, record: Record, now: float) -> list[Record]:
        """Add one record; the records now ready, in order."""
        uid = record_uuid(record)
        if uid is None or uid in self._known or uid in self._held:
            return []
        parent = record.get("parentUuid")
        if isinstance(parent, str) and parent and parent not in self._known:
            self._order += 1
            self._held[uid] = _Held(record, now, self._order)
            self._waiting.setdefault(parent, []).append(uid)
            return []
        return self._release(record)

    def expire(self, now: float) -> list[Record]:
        """Records held for ``hold_s`` or longer (and whatever waited on them)."""
        due = sorted((h for h in self._held.values() if now - h.since >= self.hold_s), key=lambda h: h.order)
        return self._release_held(due)

    def flush(self) -> list[Record]:
        """Everything still held, in file order (e.g. once a finished file was read to its end)."""
        return self._release_held(sorted(self._held.values(), key=lambda h: h.order))

    def _release_held(self, items: list[_Held]) -> list[Record]:
        out: list[Record] = []
        for item in items:
            uid = record_uuid(item.record)
            if uid is None or uid not in self._held:
                continue  # released meanwhile, after its parent
            self._unhold(uid, item.record)
            out += self._release(item.record)
        return out

    def _unhold(self, uid: str, record: Record) -> None:
        del self._held[uid]
        # a record is held only under its parent, and leaves _held when that entry goes (_release)
        parent = record["parentUuid"]
        siblings = [c for c in self._waiting[parent] if c != uid]
        if siblings:
            self._waiting[parent] = siblings
        else:
            del self._waiting[parent]

    def _release(self, record: Record) -> list[Record]:
        out: list[Record] = []
        stack = [record]
        while stack:
            current = stack.pop()
            uid = record_uuid(current)
            assert uid is not None
            self._known.add(uid)
            out.append(current)
            children = [self._held[c] for c in self._waiting.pop(uid, []) if c in self._held]
            for child in sorted(children, key=lambda h: h.order, reverse=True):
                child_uid = record_uuid(child.record)
                assert child_uid is not None
                del self._held[child_uid]
                stack.append(child.record)
        return out


# ---- following the file -------------------------------------------------------------------------------

ReadPlan = Literal["wait", "read", "restart"]


@dataclass(frozen=True)
class FileState:
    inode: int
    size: int


def reading_plan(current: FileState | None, inode: int | None, offset: int) -> ReadPlan:
    """``current``: the file now (None: missing); ``inode``/``offset``: where the reader is.
    ``restart``: the file was replaced (another inode) or truncated (shorter than the offset),
    read it again from the start (records already seen are not released twice)."""
    if current is None:
        return "wait"
    if inode is not None and current.inode != inode:
        return "restart"
    if current.size < offset:
        return "restart"
    return "read" if current.size > offset else "wait"


def parse_line(line: bytes) -> Record | None:
    """One transcript line as a JSON object, or None (blank, not JSON, not an object)."""
    if not line.strip():
        return None
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---- hook events -------------------------------------------------------------------------------------

HOOK_EVENTS: Final = ("SessionStart", "PermissionRequest", "UserPromptSubmit", "Stop", "SessionEnd")


@dataclass(frozen=True)
class HookEvent:
    name: str
    session_id: str | None
    transcript_path: str | None
    source: str | None = None
    tool_name: str | None = None
    tool_input: dict[str, Any] | None = None


def parse_hook_event(line: bytes) -> HookEvent | None:
    """One line the hook command appended (the hook's JSON input), or None when unreadable."""
    data = parse_line(line)
    if data is None or not isinstance(data.get("hook_event_name"), str):
        return None

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    tool_input = data.get("tool_input")
    return HookEvent(name=data["hook_event_name"], session_id=text("session_id"),
                     transcript_path=text("transcript_path"), source=text("source"), tool_name=text("tool_name"),
                     tool_input=tool_input if isinstance(tool_input, dict) else None)
