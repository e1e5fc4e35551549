"""The ``anthropic`` backend: the official SDK, streaming Messages API with tools.

Credentials and endpoint come from the environment (``ANTHROPIC_API_KEY`` or
``ANTHROPIC_AUTH_TOKEN``, ``ANTHROPIC_BASE_URL``) and are re-read for every request,
so ``update_environment_variables`` can rotate them mid-session.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
from collections.abc import AsyncIterator
from typing import Any

from tether.agent.backends.base import DEFAULT_MODEL, ModelBackend, ModelError, ModelRequest, ModelStream


class BackendUnavailable(RuntimeError):
    """The backend cannot run here (e.g. the SDK is not installed)."""


class AnthropicStream(ModelStream):
    def __init__(self, stream: Any, errors: tuple[type[BaseException], ...]) -> None:
        self._stream = stream
        self._errors = errors
        response = getattr(stream, "response", None)
        headers = getattr(response, "headers", None)
        self.request_id = headers.get("request-id") if headers is not None else None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        try:
            async for event in self._stream:
                yield event.to_dict()
        except self._errors as exc:
            raise _model_error(exc) from None

    async def aclose(self) -> None:
        await self._stream.close()


def _model_error(exc: BaseException) -> ModelError:
    status = getattr(exc, "status_code", None)
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return ModelError(str(message), status if isinstance(status, int) else None)


class AnthropicBackend(ModelBackend):
    name = "anthropic"

    def __init__(self, default_model: str = DEFAULT_MODEL, max_retries: int = 2, timeout_s: float = 600.0) -> None:
        if importlib.util.find_spec("anthropic") is None:
            raise BackendUnavailable("the anthropic backend needs the 'anthropic' package (pip install anthropic)")
        self._sdk: Any = None
        self._sdk_lock: asyncio.Lock | None = None
        self.default_model = default_model
        self._max_retries = max_retries
        self._timeout_s = timeout_s
        self._client: Any = None
        self._client_key: tuple[str | None, ...] | None = None

    @property
    def api_key_source(self) -> str:  # type: ignore[override]
        if os.environ.get("ANTHROPIC_API_KEY"):
            return "ANTHROPIC_API_KEY"
        if os.environ.get("ANTHROPIC_AUTH_TOKEN"):
            return "ANTHROPIC_AUTH_TOKEN"
        return "none"

    async def warm_up(self) -> None:
        """Import the SDK in a worker thread (it takes seconds), so stdin is answered meanwhile."""
        await self._load_sdk()

    async def _load_sdk(self) -> Any:
        if self._sdk is None:
            if self._sdk_lock is None:
                self._sdk_lock = asyncio.Lock()
            async with self._sdk_lock:
                if self._sdk is None:
                    self._sdk = await asyncio.to_thread(importlib.import_module, "anthropic")
        return self._sdk

    def _current_client(self) -> Any:
        key = (os.environ.get("ANTHROPIC_API_KEY"), os.environ.get("ANTHROPIC_AUTH_TOKEN"),
               os.environ.get("ANTHROPIC_BASE_URL"))
        if self._client is None or key != self._client_key:
            api_key, token, base_url = key
            self._client = self._sdk.AsyncAnthropic(
                api_key=api_key or (None if token else "not-set"), auth_token=token or None,
                base_url=base_url or None, max_retries=self._max_retries, timeout=self._timeout_s,
            )
            self._client_key = key
        return self._client

    async def open(self, request: ModelRequest) -> ModelStream:
        await self._load_sdk()
        client = self._current_client()
        kwargs: dict[str, Any] = {
            "model": request.model, "max_tokens": request.max_tokens, "messages": request.messages,
            "stream": True,
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = request.tools
        if request.metadata:
            kwargs["metadata"] = request.metadata
        try:
            stream = await client.messages.create(**kwargs)
        except self._sdk.APIError as exc:
            raise _model_error(exc) from None
        return AnthropicStream(stream, (self._sdk.APIError,))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
