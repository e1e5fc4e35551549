"""Session titles (docs/protocol.md §12.8).

A session without an explicit title is named after its first title-worthy user
message: what a person typed, not a tool result, a synthetic/meta message, a
replayed compact summary, an interrupt marker or a slash command. The text is
whitespace-flattened and cut to 80 characters on a word boundary with ``…``.
An explicit title (``--name``, ``/rename``, a PATCH by a user) always wins and is
never replaced by a derived one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_MAX_LEN",
    "ELLIPSIS",
    "INITIAL_TITLE_LEN",
    "REGENERATE_AT",
    "SLUG_PREFIX",
    "ReplTitles",
    "TitleState",
    "TitleStep",
    "TitleUpdate",
    "derive_title",
    "message_text",
    "slug_title",
    "summary_title",
    "title_from_text",
    "truncate",
]

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
    regenerate a better title on the third one (docs/protocol.md §12.8) without a second
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


# ---- the REPL bridge's titles (docs/protocol.md §12.8) -------------------------------------------------------

INITIAL_TITLE_LEN: Final = 50
REGENERATE_AT: Final = 3
SLUG_PREFIX: Final = "remote-control-"
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
_STOP_WORDS: Final = frozenset(
    "a an the and or but if then else of to in on at by for with from into onto over under about as is are "
    "was were be been being do does did done can could should would will shall may might must i you he she it "
    "we they me him her us them my your his its our their this that these those there here what which who whom "
    "whose when where why how not no yes please thanks thank let lets just also too very so than now up down "
    "out off again once all any each few more most other some such only own same both get got make made use "
    "using want need like".split())


def slug_title(words: Sequence[str]) -> str:
    """``remote-control-<word>-<word>``: the title of a session that has nothing to be named after."""
    return SLUG_PREFIX + "-".join(w.lower() for w in words if w) if words else SLUG_PREFIX.rstrip("-")


def summary_title(texts: Sequence[str], max_len: int = INITIAL_TITLE_LEN, max_words: int = 6) -> str | None:
    """A deterministic summary of a conversation's prompts: its most frequent content words (ties:
    the earliest first), in the order they first appear. None when no word qualifies."""
    counts: dict[str, int] = {}
    first: dict[str, tuple[int, str]] = {}
    position = 0
    for text in texts:
        for match in _WORD.finditer(_HIDDEN_BLOCKS.sub(" ", text)):
            word = match.group().rstrip(".-+")
            key = word.lower()
            if len(key) < 3 or key in _STOP_WORDS or key.isdigit():
                continue
            counts[key] = counts.get(key, 0) + 1
            if key not in first:
                first[key] = (position, word)
                position += 1
    if not counts:
        return None
    ranked = sorted(counts, key=lambda k: (-counts[k], first[k][0]))[:max_words]
    words = [first[k][1] for k in sorted(ranked, key=lambda k: first[k][0])]
    words[0] = words[0][:1].upper() + words[0][1:]
    return truncate(" ".join(words), max_len)


TitleStep = Literal["placeholder", "regenerate"]


@dataclass(frozen=True)
class TitleUpdate:
    """``placeholder``: use ``title`` now. ``regenerate``: ask the agent's model for a title of the
    whole conversation; ``title`` is the deterministic summary to use when it cannot answer."""

    step: TitleStep
    title: str


class ReplTitles:
    """The title rules of a REPL bridge session (docs/protocol.md §12.8).

    Initial title: an explicit name (``/remote-control <name>``, ``--name``) → a ``/rename`` title →
    the first sentence of the last title-worthy prompt of the conversation so far (≤ 50 characters)
    → ``remote-control-<slug>``. Then, live: the first title-worthy prompt replaces a slug with a
    placeholder taken from it; the third one asks for a title regenerated from the whole
    conversation. A title a person chose is never replaced.
    """

    def __init__(self, state: TitleState, *, from_slug: bool = False, texts: Sequence[str] = (),
                 regenerated: bool = False) -> None:
        self.state = state
        self.from_slug = from_slug
        self.texts: list[str] = list(texts)[-50:]
        self.regenerated = regenerated

    @classmethod
    def start(cls, *, explicit: str | None, renamed: str | None, messages: Sequence[Mapping[str, Any]],
              slug_words: Sequence[str]) -> ReplTitles:
        texts = [t for t in (message_text(msg) for msg in messages) if t and title_from_text(t)]
        worthy = len(texts)
        done = worthy >= REGENERATE_AT  # the conversation already names itself
        for name in (explicit, renamed):
            if name and name.strip():
                state = TitleState(name.strip(), explicit=True, worthy_messages=worthy)
                return cls(state, texts=texts, regenerated=done)
        if texts:  # each is title-worthy, so the latest one's first sentence is a title
            title = title_from_text(texts[-1], INITIAL_TITLE_LEN, first_sentence=True)
            return cls(TitleState(title, worthy_messages=worthy), texts=texts, regenerated=done)
        return cls(TitleState(slug_title(slug_words)), from_slug=True, texts=texts, regenerated=done)

    @property
    def title(self) -> str | None:
        return self.state.title

    @property
    def explicit(self) -> bool:
        return self.state.explicit

    def observe(self, message: Mapping[str, Any]) -> TitleUpdate | None:
        """Feed one prompt of the conversation; what to do about the title, if anything."""
        text = message_text(message)
        placeholder = title_from_text(text, INITIAL_TITLE_LEN, first_sentence=True) if text else None
        if text is None or placeholder is None:
            return None
        self.state = replace(self.state, worthy_messages=self.state.worthy_messages + 1)
        self.texts = [*self.texts[-49:], text]
        if self.state.explicit:
            return None
        if self.state.title is None or self.from_slug:
            self.from_slug = False
            self.state = self.state.replace_derived(placeholder)
            return TitleUpdate("placeholder", placeholder)
        if self.state.worthy_messages >= REGENERATE_AT and not self.regenerated:
            self.regenerated = True
            return TitleUpdate("regenerate", summary_title(self.texts) or placeholder)
        return None

    def generated(self, title: str) -> bool:
        """A regenerated title arrived; False (ignored) when a person named the session meanwhile."""
        cleaned = title_from_text(title, INITIAL_TITLE_LEN)
        if cleaned is None or self.state.explicit:
            return False
        self.state = self.state.replace_derived(cleaned)
        return True

    def rename(self, title: str) -> None:
        """A person named the session (``/rename``, or a rename seen on the server)."""
        self.state = self.state.set_explicit(title)
