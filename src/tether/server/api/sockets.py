"""Shared WebSocket plumbing: accept-then-close with a code, serialised sends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tether.errors import AuthenticationFailed, Gone, NotFound, PermissionDenied, TetherError
from tether.server import jsonio
from tether.server.streams import CLOSE_UNAUTHORIZED, Holder

__all__ = ["CLOSE_INVALID_DATA", "CLOSE_NOT_FOUND", "CLOSE_POLICY", "CLOSE_RESTART", "CLOSE_SERVER_ERROR",
           "CLOSE_TOO_BIG", "CLOSE_UNAUTHORIZED", "Socket", "cancelling_holder", "close_code_for", "is_disconnect",
           "reject", "uncancel"]

log = logging.getLogger("tether.server.sockets")

CLOSE_NOT_FOUND = 4001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INVALID_DATA = 1007
CLOSE_SERVER_ERROR = 1011
CLOSE_RESTART = 1012


def close_code_for(exc: TetherError) -> int:
    if isinstance(exc, NotFound):
        return CLOSE_NOT_FOUND
    if isinstance(exc, AuthenticationFailed | PermissionDenied | Gone):  # Gone: the token's work ended
        return CLOSE_UNAUTHORIZED
    if exc.status == 413:
        return CLOSE_TOO_BIG
    return CLOSE_POLICY


class Socket:
    """A WebSocket whose sends are serialised (two tasks may write)."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.lock = asyncio.Lock()

    async def send_text(self, text: str) -> None:
        async with self.lock:
            await self.ws.send({"type": "websocket.send", "text": text})

    async def send_json(self, obj: Any) -> None:
        await self.send_text(jsonio.dumps(obj).decode())

    async def close(self, code: int, reason: str = "") -> None:
        with contextlib.suppress(Exception):
            if self.ws.application_state != WebSocketState.DISCONNECTED:
                await self.ws.close(code, reason[:120])

    async def receive_text(self) -> str | None:
        """The next text (or UTF-8 bytes) frame; None when the peer went away."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("text") is not None:
            return str(message["text"])
        data = message.get("bytes") or b""
        try:
            return bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise TetherError("Frames must be UTF-8 JSON.", status=400) from None


async def reject(ws: WebSocket, exc: TetherError) -> None:
    """Accept, then close with the code the error maps to (clients read codes, not HTTP statuses)."""
    with contextlib.suppress(Exception):
        await ws.accept()
        await ws.close(close_code_for(exc), exc.message[:120])


def cancelling_holder(role: str = "") -> Holder:
    """A :class:`Holder` for the socket served by the current task: revoking it cancels the
    task, whose handler then sees ``holder.closed`` set, calls :func:`uncancel` and closes
    the socket with that code. (No task per socket for this, and nothing on the fan-out path.)"""
    task = asyncio.current_task()
    assert task is not None
    return Holder(task.cancel, role)


def uncancel() -> None:
    task = asyncio.current_task()
    if task is not None:
        task.uncancel()


def is_disconnect(exc: BaseException) -> bool:
    return isinstance(exc, WebSocketDisconnect | ConnectionError)
