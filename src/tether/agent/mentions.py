"""``@path`` references in a prompt, read the way the stock CLI reads them.

Observed with the stock ``claude`` (2.1.197) over stream-json against a fake Messages API:

* a reference is ``@"path"`` or ``@path`` at the start of the text or after white space
  (``foo@x`` and ``(@x)`` are not references); an unquoted one ends at white space and
  drops trailing punctuation (``@notes.txt,`` names ``notes.txt``); ``#L5`` / ``#L5-9`` at
  the end picks lines; relative paths are taken from the working directory, ``~`` is home;
* the prompt itself is sent unchanged; each text file comes after it as the result of a
  Read call: ``Called the Read tool with the following input: {"file_path":"<abs>"}`` /
  ``Result of calling the Read tool:`` / the lines numbered ``<n>\\t<line>``;
* an image comes before it: a reminder naming the Read call, then the image block;
* a directory is listed (as a ``ls`` Bash call); a missing or binary file is left out.

The CLI sends the file parts as a ``system``-role entry, which the Messages API itself does
not accept, so here every part goes into the prompt's own user message (images and their
reminders first, the prompt, then the files' text): same words, a request any API takes.

:func:`find_mentions` and :func:`expanded_content` are pure; :func:`load` reads one file
(blocking) and :func:`expand_prompt` runs the loads in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

MAX_MENTIONS: Final = 20
MAX_TEXT_BYTES: Final = 256 << 10
MAX_IMAGE_BYTES: Final = 3_750_000  # 5 MB once base64-encoded: the Messages API's per-image limit
MAX_LISTING: Final = 1000

_MENTION = re.compile(r'(?<!\S)@(?:"([^"]+)"|([^\s"]\S*))')
_WORD_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
_LINES = re.compile(r"#L(\d+)(?:-(\d+))?$")
_IMAGE_MAGIC: Final = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                       (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))


@dataclass(frozen=True)
class Mention:
    path: str
    first_line: int | None = None
    last_line: int | None = None


@dataclass(frozen=True)
class TextFile:
    path: str  # absolute
    text: str
    first_line: int | None = None
    last_line: int | None = None
    truncated: bool = False


@dataclass(frozen=True)
class Image:
    path: str
    media_type: str
    data: str  # base64


@dataclass(frozen=True)
class Listing:
    path: str
    names: tuple[str, ...]


Loaded = TextFile | Image | Listing


def find_mentions(text: str) -> list[Mention]:
    """The references in ``text``, in order, each once (at most :data:`MAX_MENTIONS`)."""
    found: list[Mention] = []
    for match in _MENTION.finditer(text):
        quoted, bare = match.group(1), match.group(2)
        raw = quoted if bare is None else _to_word_boundary(bare)
        if not raw:
            continue
        mention = _with_lines(raw)
        if mention.path and mention not in found:
            found.append(mention)
        if len(found) >= MAX_MENTIONS:
            break
    return found


def _to_word_boundary(bare: str) -> str:
    """``bare`` up to its last ASCII word character (where the CLI's ``\\b`` lets the match end)."""
    end = len(bare)
    while end and bare[end - 1] not in _WORD_CHARS:
        end -= 1
    return bare[:end]


def _with_lines(raw: str) -> Mention:
    lines = _LINES.search(raw)
    if lines is None:
        return Mention(raw)
    first = int(lines.group(1))
    last = int(lines.group(2)) if lines.group(2) else first
    return Mention(raw[:lines.start()], max(1, first), max(first, last))


def prompt_text(content: Any) -> str:
    """The text of a prompt's content (a string or content blocks), where references are looked for."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


def _call(tool: str, tool_input: dict[str, str]) -> str:
    return f"Called the {tool} tool with the following input: {json.dumps(tool_input, ensure_ascii=False, separators=(',', ':'))}"


def _reminder(text: str) -> dict[str, str]:
    return {"type": "text", "text": f"<system-reminder>\n{text}\n</system-reminder>"}


def render_text(item: TextFile) -> str:
    lines = item.text.split("\n")
    first = item.first_line or 1
    last = min(item.last_line or len(lines), len(lines))
    numbered = "\n".join(f"{n}\t{lines[n - 1]}" for n in range(first, last + 1))
    note = "\n(The file is longer; this is its beginning. Read it with the Read tool for the rest.)" \
        if item.truncated else ""
    return f"{_call('Read', {'file_path': item.path})}\nResult of calling the Read tool:\n{numbered}{note}"


def render_listing(item: Listing) -> str:
    call = _call("Bash", {"command": f"ls {item.path}", "description": f"Lists files in {item.path}"})
    return f"{call}\nResult of calling the Bash tool:\n" + "\n".join(item.names)


def expanded_content(content: Any, loaded: Sequence[Loaded]) -> Any:
    """The prompt's content with what its references hold; unchanged when they hold nothing."""
    if not loaded:
        return content
    before: list[dict[str, Any]] = []
    after: list[dict[str, Any]] = []
    for item in loaded:
        if isinstance(item, Image):
            before.append(_reminder(_call("Read", {"file_path": item.path})))
            before.append({"type": "image", "source": {"type": "base64", "media_type": item.media_type,
                                                       "data": item.data}})
        elif isinstance(item, TextFile):
            after.append(_reminder(render_text(item)))
        else:
            after.append(_reminder(render_listing(item)))
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    return before + blocks + after


# --- reading (blocking) ------------------------------------------------------------------------


def image_type(head: bytes) -> str | None:
    for magic, media_type in _IMAGE_MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def load(mention: Mention, cwd: str) -> Loaded | None:
    """What the reference names, or None (missing, unreadable, binary, too large: left out)."""
    path = os.path.normpath(os.path.join(cwd, os.path.expanduser(mention.path)))
    try:
        if os.path.isdir(path):
            names = sorted(n for n in os.listdir(path) if not n.startswith("."))
            return Listing(path, tuple(names[:MAX_LISTING]))
        with open(path, "rb") as fh:
            media_type = image_type(fh.read(16))
            fh.seek(0)
            limit = MAX_IMAGE_BYTES if media_type else MAX_TEXT_BYTES
            data = fh.read(limit + 1)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    truncated = len(data) > limit
    if media_type is not None:
        return None if truncated else Image(path, media_type, base64.b64encode(data).decode("ascii"))
    if b"\x00" in data[:8192]:
        return None
    if truncated:
        data = data[:limit]
        data = data[:data.rfind(b"\n") + 1] or data  # whole lines only
    return TextFile(path, data.decode("utf-8", "replace"), mention.first_line, mention.last_line, truncated)


def load_all(mentions: Sequence[Mention], cwd: str) -> list[Loaded]:
    loaded = (load(m, cwd) for m in mentions)
    return [item for item in loaded if item is not None]


async def expand_prompt(content: Any, cwd: str) -> Any:
    """``content`` with its references read (in a worker thread: file reads block)."""
    mentions = find_mentions(prompt_text(content))
    if not mentions:
        return content
    return expanded_content(content, await asyncio.to_thread(load_all, mentions, cwd))
