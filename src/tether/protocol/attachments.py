"""Web-composer attachments on inbound user messages (docs/protocol.md §7.6, §3.7). Pure.

A client's user message may carry ``file_attachments: [{file_uuid, file_name}]``: files it
uploaded with ``POST /v1/files``. The agent knows nothing of them, so the session host
downloads each one (``GET /api/oauth/files/{file_uuid}/content``), stores it in the session's
directory and rewrites the prompt so the agent reads the files the way it reads any
``@"path"`` reference: the references go in front of the *last* text block, as the reference
bridge does. This module decides which attachments a message has, where each one is stored
and what the rewritten message is; the download is the host's (``tether.bridge.attachments``).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "ATTACHMENTS_DIR",
    "MAX_ATTACHMENTS",
    "MAX_NAME_CHARS",
    "Attachment",
    "Skipped",
    "attachments_of",
    "local_name",
    "reference",
    "reference_path",
    "sanitize_name",
    "session_folder",
    "skipped_warning",
    "with_references",
]

MAX_ATTACHMENTS: Final = 20
"""Attachments resolved per message; more are skipped with a warning (bounded work per prompt)."""
MAX_NAME_CHARS: Final = 100
ATTACHMENTS_DIR: Final = (".tether", "attachments")
"""Under the session's working directory: ``.tether/attachments/<session>/<file>``."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FILE_UUID = re.compile(r"[A-Za-z0-9_-]{1,128}")


@dataclass(frozen=True)
class Attachment:
    file_uuid: str
    file_name: str
    """As the client sent it (for messages to people)."""
    local_name: str
    """The file's name on disk: ``<first 8 chars of the uuid>-<sanitised name>`` (never clashes
    between two attachments of a session, never leaves the session's folder)."""


@dataclass(frozen=True)
class Skipped:
    """An attachment the agent does not get, and why (for the warning the host writes)."""

    file_name: str
    file_uuid: str | None
    reason: str


def sanitize_name(name: str, fallback: str = "file") -> str:
    """A file name safe on any file system and inside an unquoted ``@path``: the last path
    component, characters outside ``[A-Za-z0-9._-]`` replaced by ``_``, no leading dots
    (no hidden files, no ``..``), at most :data:`MAX_NAME_CHARS` characters (the extension kept)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    safe = _UNSAFE.sub("_", base).lstrip(".")
    if len(safe) > MAX_NAME_CHARS:
        stem, dot, ext = safe.rpartition(".")
        if dot and stem and len(ext) <= 16:  # keep the extension: agents tell images by it
            safe = stem[:MAX_NAME_CHARS - len(ext) - 1] + "." + ext
        else:
            safe = safe[:MAX_NAME_CHARS]
    return safe or fallback


def local_name(file_uuid: str, file_name: str) -> str:
    return f"{sanitize_name(file_uuid)[:8]}-{sanitize_name(file_name)}"


def session_folder(session_id: str) -> str:
    """The session's attachment folder, relative to its working directory."""
    return posixpath.join(*ATTACHMENTS_DIR, sanitize_name(session_id, "session"))


def attachments_of(message: Mapping[str, Any]) -> tuple[list[Attachment], list[Skipped]]:
    """The attachments of an inbound user message to download, and the entries that cannot be."""
    raw = message.get("file_attachments")
    if message.get("type") != "user" or not isinstance(raw, list):
        return [], []
    found: list[Attachment] = []
    rejected: list[Skipped] = []
    seen: set[str] = set()
    for entry in raw:
        if not isinstance(entry, Mapping):
            rejected.append(Skipped("?", None, "the entry is not an object"))
            continue
        uuid, name = entry.get("file_uuid"), entry.get("file_name")
        shown = name if isinstance(name, str) and name else (uuid if isinstance(uuid, str) else "?")
        if not isinstance(uuid, str) or not _FILE_UUID.fullmatch(uuid):
            rejected.append(Skipped(shown, None, "it has no valid file_uuid"))
        elif uuid in seen:
            continue  # the same file twice: one copy, one reference
        elif len(found) >= MAX_ATTACHMENTS:
            rejected.append(Skipped(shown, uuid, f"a message may carry at most {MAX_ATTACHMENTS} attachments"))
        else:
            seen.add(uuid)
            found.append(Attachment(uuid, shown, local_name(uuid, shown)))
    return found, rejected


def reference_path(cwd: str, relative: str) -> str:
    """The path an agent in ``cwd`` is given for a stored attachment: absolute, as the reference
    does, unless ``cwd`` holds a double quote (a quoted reference cannot carry one); then
    relative to ``cwd``, which holds sanitised names only."""
    absolute = posixpath.join(cwd, relative)
    return relative if '"' in absolute else absolute


def reference(path: str) -> str:
    """``@"path"``, the form the stock CLI and ``tether agent`` expand into the file's content."""
    return f'@"{path}"'


def with_references(message: Mapping[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """``message`` without ``file_attachments`` (they are resolved), its last text block prefixed
    with a reference to each path (a text block is added when there is none). Every other field,
    the ``uuid`` included, is kept: deduplication and delivery tracking go on working."""
    out = {k: v for k, v in message.items() if k != "file_attachments"}
    if not paths:
        return out
    prefix = "".join(reference(p) + " " for p in paths)
    inner = dict(out.get("message") or {})
    content = inner.get("content")
    if isinstance(content, str):
        inner["content"] = prefix + content
    else:
        blocks = [dict(b) if isinstance(b, Mapping) else b for b in content or []]
        last = next((i for i in range(len(blocks) - 1, -1, -1)
                     if isinstance(blocks[i], dict) and blocks[i].get("type") == "text"), None)
        if last is None:
            blocks.append({"type": "text", "text": prefix.rstrip()})
        else:
            blocks[last]["text"] = prefix + str(blocks[last].get("text", ""))
        inner["content"] = blocks
    out["message"] = inner
    return out


def skipped_warning(skipped: Sequence[Skipped], *, prompt_uuid: str | None, uuid: str,
                    session_id: str = "") -> dict[str, Any]:
    """The session event that tells the people watching which attachments the agent did not
    get (a Tether ``system`` message, subtype ``warning``; other clients ignore it)."""
    if len(skipped) == 1:
        text = f"The attachment {skipped[0].file_name} did not reach the agent: {skipped[0].reason}."
    else:
        listed = "; ".join(f"{s.file_name} ({s.reason})" for s in skipped)
        text = f"{len(skipped)} attachments did not reach the agent: {listed}."
    return {
        "type": "system", "subtype": "warning", "warning": "attachments_skipped", "message": text,
        "attachments": [{"file_uuid": s.file_uuid, "file_name": s.file_name, "reason": s.reason} for s in skipped],
        "prompt_uuid": prompt_uuid, "uuid": uuid, "session_id": session_id,
    }
