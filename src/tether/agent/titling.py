"""``generate_session_title``: a short title for a conversation, from the agent's model
(docs/protocol.md §7.3: ``description`` → ``{title}``; the REPL bridge asks for one, §12.8)."""

from __future__ import annotations

from typing import Final

from tether.agent.backends.base import MODEL_ALIASES, ModelBackend, ModelError, ModelRequest
from tether.protocol.titles import INITIAL_TITLE_LEN, title_from_text

TITLE_MODEL: Final = MODEL_ALIASES["haiku"]
MAX_DESCRIPTION: Final = 4000
SYSTEM: Final = ("You name coding sessions. The user describes a conversation between a developer and a coding "
                 "agent. Reply with a short, specific title of 3 to 7 words for it, and nothing else.")


async def generate_title(backend: ModelBackend, description: str) -> str:
    """Ask the model; raises :class:`ModelError` when the backend cannot or the answer is empty.

    The ``scripted`` backend has no model that could name anything: it refuses."""
    if backend.name != "anthropic":
        raise ModelError(f"the {backend.name} backend cannot write titles")
    request = ModelRequest(model=TITLE_MODEL, system=SYSTEM, tools=[], max_tokens=40,
                           messages=[{"role": "user", "content": description[-MAX_DESCRIPTION:] or "(empty)"}])
    stream = await backend.open(request)
    text = ""
    try:
        async for event in stream.events():
            delta = event.get("delta") if event.get("type") == "content_block_delta" else None
            if isinstance(delta, dict) and delta.get("type") == "text_delta":
                text += str(delta.get("text", ""))
    finally:
        await stream.aclose()
    title = title_from_text(text.strip().strip("\"'"), INITIAL_TITLE_LEN)
    if title is None:
        raise ModelError("the model answered no title")
    return title
