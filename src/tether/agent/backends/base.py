"""The model backend interface: one streaming Messages API request at a time."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

DEFAULT_MODEL: Final = "claude-sonnet-4-5"
MODEL_ALIASES: Final[Mapping[str, str]] = {
    "sonnet": "claude-sonnet-4-5",
    "opus": "claude-opus-4-1",
    "haiku": "claude-haiku-4-5",
}
# USD per million tokens (input, output); cache reads at 10 % and writes at 125 % of input.
_PRICES: Final[tuple[tuple[str, float, float], ...]] = (
    ("opus", 15.0, 75.0),
    ("sonnet", 3.0, 15.0),
    ("haiku", 1.0, 5.0),
)


def resolve_model(name: str | None, default: str) -> str:
    if name is None or name in ("", "default"):
        return default
    return MODEL_ALIASES.get(name, name)


def cost_usd(model: str, input_tokens: int, output_tokens: int, cache_read: int = 0,
             cache_creation: int = 0) -> float:
    for key, price_in, price_out in _PRICES:
        if key in model:
            return (input_tokens * price_in + output_tokens * price_out + cache_read * price_in * 0.1
                    + cache_creation * price_in * 1.25) / 1_000_000
    return 0.0


def model_choices(default: str) -> list[dict[str, Any]]:
    """The ``models`` list of the ``initialize`` reply."""
    out: list[dict[str, Any]] = [{"value": "default", "resolvedModel": default, "displayName": "Default",
                                  "description": f"The default model ({default})"}]
    for alias, model in MODEL_ALIASES.items():
        out.append({"value": alias, "resolvedModel": model, "displayName": alias.capitalize(),
                    "description": model})
    return out


@dataclass(frozen=True)
class ModelRequest:
    model: str
    system: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    max_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)


class ModelError(Exception):
    """A model request failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class ModelStream(ABC):
    """One streaming response: raw Messages API events as dicts."""

    request_id: str | None = None

    @abstractmethod
    def events(self) -> AsyncIterator[dict[str, Any]]:
        """Yield events; raise :class:`ModelError` when the stream fails."""

    async def aclose(self) -> None:
        return None


class ModelBackend(ABC):
    name: str
    default_model: str
    api_key_source: str = "none"

    @abstractmethod
    async def open(self, request: ModelRequest) -> ModelStream:
        """Start a request; raise :class:`ModelError` when it cannot be made."""

    async def warm_up(self) -> None:
        """Prepare in the background (e.g. slow imports) while the session answers stdin."""
        return None

    async def aclose(self) -> None:
        return None
