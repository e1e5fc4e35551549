"""Session titles (reference §6.7).

A session without an explicit title is named after its first title-worthy user
message: what a person typed, not a tool result, a synthetic/meta message, a
replayed compact summary, an interrupt marker or a slash command. The text is
whitespace-flattened and cut to 80 characters on a word boundary with ``…``.
An explicit title (``--name``, ``/rename``, a PATCH by a user) always wins and is
never replaced by a derived one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Final

DEFAULT_MAX_LEN: Final = 80
ELLIPSIS: Final = "…"

_WHITESPACE = re.compile(r"\s+")
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Wrapped blocks the CLI inserts into user text for the model, never typed by a person.
_HIDDEN_BLOCKS = re.compile(
    r"<(system-reminder|local-command-stdout|local-command-stderr|command-message|command-args)>.*?</\1>",
    re.DOTALL,
)
_SLASH_COMMAND = re.compile(r"^/[A-Za-z][\w:.-]*(\s|$)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_INTERRUPT_MARKERS: Final = ("[Request interrupted by user",)


def message_text(message: Mapping[str, Any]) -> str | None:
    """The text a person typed in a ``user`` message, or None when it is not one."""
    if message.get("type") != "user":
        return None
    if message.get("isSynthetic") or message.get("isMeta") or message.get("isCompactSummary"):
        return None
    if message.get("parent_tool_use_id") or "tool_use_result" in message:
        return None  # a subagent's message or a tool result echoed back
    inner = message.get("message")
    if not isinstance(inner, Mapping):
        return None
    content = inner.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    texts: list[str] = []
    for block in content:
        if not isinstance(block, Mapping):
            continue
        if block.get("type") == "tool_result":
            return None
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
    return "\n".join(texts) if texts else None


def title_from_text(text: str, max_len: int = DEFAULT_MAX_LEN, first_sentence: bool = False) -> str | None:
    """Flatten and shorten ``text``; None when nothing title-worthy is left."""
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2, got {max_len}")
    cleaned = _HIDDEN_BLOCKS.sub(" ", text)
    if "<command-name>" in cleaned or cleaned.lstrip().startswith(_INTERRUPT_MARKERS):
        return None  # a slash command's transcript entry or an interrupt marker
    cleaned = _WHITESPACE.sub(" ", _CONTROL_CHARS.sub("", cleaned)).strip()
    if not cleaned or _SLASH_COMMAND.match(cleaned):
        return None
    if first_sentence:
        cleaned = _SENTENCE_END.split(cleaned, maxsplit=1)[0]
    return truncate(cleaned, max_len)


def truncate(text: str, max_len: int = DEFAULT_MAX_LEN) -> str:
    """``text`` if it fits, else a word-boundary cut ending in ``…`` (total ≤ ``max_len``)."""
    if len(text) <= max_len:
        return text
    head = text[: max_len - 1]
    if not text[len(head)].isspace():  # the cut falls inside a word
        space = head.rfind(" ")
        if space >= max_len // 2:  # a boundary not too far back; else cut mid-word
            head = head[:space]
    return head.rstrip(" ,;:-") + ELLIPSIS


def derive_title(message: Mapping[str, Any], max_len: int = DEFAULT_MAX_LEN) -> str | None:
    """The title a session would get from ``message``, or None if it is not title-worthy."""
    text = message_text(message)
    return None if text is None else title_from_text(text, max_len)


@dataclass(frozen=True)
class TitleState:
    """A session's title and whether a person chose it.

    ``worthy_messages`` counts title-worthy user messages seen, so an adapter can
    regenerate a better title on the third one (reference §6.7) without a second
    rule about what counts.
    """

    title: str | None = None
    explicit: bool = False
    worthy_messages: int = 0

    def set_explicit(self, title: str) -> TitleState:
        """A person named the session: always wins."""
        return replace(self, title=title, explicit=True)

    def offer_derived(self, title: str) -> TitleState:
        """A derived title, taken only when there is no title yet."""
        if self.explicit or self.title is not None:
            return self
        return replace(self, title=title)

    def replace_derived(self, title: str) -> TitleState:
        """A better derived title (e.g. generated from the conversation); never over an explicit one."""
        return self if self.explicit else replace(self, title=title)

    def observe(self, message: Mapping[str, Any], max_len: int = DEFAULT_MAX_LEN) -> TitleState:
        """Feed one outbound or inbound message; returns the (possibly unchanged) state."""
        title = derive_title(message, max_len)
        if title is None:
            return self
        return replace(self, worthy_messages=self.worthy_messages + 1).offer_derived(title)
