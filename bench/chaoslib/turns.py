"""Whether a prompt was answered: the agent ran *that* prompt to the end of a turn.

"A ``result`` somewhere after the prompt" is too weak: a turn cut short (its agent killed
mid-turn) followed by the next prompt's turn has a result after it too, and the soak once passed
full runs while v1 dropped such prompts (only a short run, whose last prompt was the cut one,
showed it). The soak's scripted model starts every turn with ``Working on: <prompt>.``
(world.SCENARIO), so a session's log reads as a sequence of *markers*: a turn starting on a named
prompt, or a ``result``. A prompt is answered when one of its turns is followed by a result before
any other turn starts (agents run one turn at a time; a cut turn is followed by the next start).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

STARTED = re.compile(r"Working on: (chaos prompt \d+ for [A-Za-z0-9_-]+)\.")

Markers = Mapping[int, str | None]  # sequence_num → the prompt text a turn starts on, None for a result


def prompt_text(n: int, sid: str) -> str:
    return f"chaos prompt {n} for {sid}"


def marker(payload: Mapping[str, Any]) -> tuple[bool, str | None]:
    """(is a marker, the prompt it starts a turn on — None for a result) for a stored event."""
    kind = payload.get("type")
    if kind == "result":
        return True, None
    if kind != "assistant":
        return False, None
    content = (payload.get("message") or {}).get("content")
    for block in content if isinstance(content, list) else ():
        if isinstance(block, dict) and block.get("type") == "text":
            found = STARTED.search(str(block.get("text", "")))
            if found:
                return True, found.group(1)
    return False, None


def answered(markers: Markers, text: str) -> bool:
    """A turn on ``text`` is followed by a result before any other turn starts."""
    running = False
    for seq in sorted(markers):
        named = markers[seq]
        if named is None:
            if running:
                return True
        else:
            running = named == text
    return False
