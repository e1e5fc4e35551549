"""The headless run of a ``tether claude`` session: ``claude --resume <uuid> -p --input-format
stream-json …`` under the bridge's :class:`~tether.bridge.session_host.SessionHost`, as ``tether rc``
runs it, with one difference: its transport is the session the REPL bridge core already carries
(:class:`CoreLink`), so the session, its log and its subscribers stay the same across hand-offs.

What goes up: the agent's output through the core as it is (:meth:`ReplBridgeCore.relay`:
stream events, ``system/init``, echoes, results — clients see the turn stream); its permission
questions through the core's permission race (:meth:`ReplBridgeCore.ask_permission`), so a
client's answer comes back through :meth:`CoreLink.deliver`; its ``control_cancel_request`` as a
withdrawal. Answers to the link's own requests (interrupt, model, mode) and the agent's echoes of
permission answers stay here. What comes down: prompts, permission answers and control requests,
queued by the front end with :meth:`CoreLink.deliver`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid as uuidlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, Final

from tether.bridge.repl.core import ReplBridgeCore
from tether.client.transport import Message, TransportClosed, TransportError, TransportState
from tether.protocol import messages as m

log = logging.getLogger("tether.claude.remote")
OWN_PREFIX: Final = "tether-claude-"
INBOUND_CAPACITY: Final = 1000


def own_request(subtype: str, **fields: Any) -> Message:
    """A control request of ``tether claude`` itself for the headless agent (its answer stays here)."""
    return m.control_request(subtype, f"{OWN_PREFIX}{uuidlib.uuid4()}", **fields)


class CoreLink:
    """A :class:`~tether.client.transport.SessionTransport` for the session host over the REPL
    bridge core (``core()`` may change when remote control restarts, or be None while it is off)."""

    def __init__(self, core: Callable[[], ReplBridgeCore | None], on_output: Callable[[Message], None]) -> None:
        self._core = core
        self._on_output = on_output
        self._inbound: asyncio.Queue[Message] = asyncio.Queue(INBOUND_CAPACITY)
        self._closed = asyncio.Event()
        self._info: TransportClosed | None = None
        self.written = 0

    # ---- the front end's side ---------------------------------------------------------------------

    def deliver(self, message: Message) -> bool:
        """A message for the agent (a prompt, a permission answer, a control request)."""
        if self._closed.is_set():
            return False
        try:
            self._inbound.put_nowait(message)
        except asyncio.QueueFull:
            log.warning("the headless agent is not reading; dropped a %s", message.get("type"))
            return False
        return True

    # ---- SessionTransport ---------------------------------------------------------------------------

    @property
    def state(self) -> TransportState:
        return TransportState.CLOSED if self._closed.is_set() else TransportState.CONNECTED

    @property
    def closed_info(self) -> TransportClosed | None:
        return self._info

    async def run(self) -> TransportClosed:
        await self._closed.wait()
        assert self._info is not None
        return self._info

    async def wait_connected(self, timeout: float) -> bool:
        return not self._closed.is_set()

    def write(self, message: Message) -> None:
        if self._closed.is_set():
            raise TransportError("the headless run has ended")
        core = self._core()
        if core is None:
            raise TransportError("remote control is off")
        kind = message.get("type")
        if kind == m.CONTROL_REQUEST:
            if m.control_subtype(message) != m.CAN_USE_TOOL:
                raise TransportError(f"{m.control_subtype(message)} requests are not supported here")
            if not core.ask_permission(message):
                raise TransportError("the permission question could not be shared")
        elif kind == m.CONTROL_CANCEL_REQUEST:
            rid = m.request_id_of(message)
            if rid is not None:
                core.withdraw_permission(rid)
        elif kind == m.CONTROL_RESPONSE:
            return  # answers to our own requests, echoes of permission answers: nothing for clients
        else:
            core.relay(message)
        self.written += 1
        self._on_output(message)

    def write_many(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self.write(message)

    async def incoming(self) -> AsyncIterator[Message]:
        while not self._closed.is_set():
            get = asyncio.ensure_future(self._inbound.get())
            closed = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait({get, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
                if not get.done():
                    get.cancel()
            if get.done() and not get.cancelled():
                yield get.result()

    def set_token(self, token: str) -> None:
        """The core owns the credentials."""

    async def flush(self, timeout: float) -> bool:
        return True

    def undelivered(self) -> list[Message]:
        return []

    async def close(self, grace: float | None = None) -> None:
        if self._info is None:
            self._info = TransportClosed("closed", 1000)
        self._closed.set()
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                dropped = self._inbound.get_nowait()
                log.info("the headless run ended before it took a %s", dropped.get("type"))
