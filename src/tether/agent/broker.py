"""Open ``can_use_tool`` requests: ask over stdout, settle from stdin or from policy changes.

A request is settled exactly once: by the host's ``control_response``, or "another
way" — an interrupt, the input closing, or a mode/rule change that decides the call
without asking. When settled another way the agent writes ``control_cancel_request``
so every prompt for it disappears (docs/protocol.md §7.3); a late answer is then ignored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from tether.protocol.messages import (
    Message,
    MessageError,
    PermissionAllow,
    PermissionDecision,
    PermissionDeny,
    cancel_request,
    parse_permission_decision,
    response_payload,
)

Source = Literal["user_temporary", "user_permanent", "user_reject", "config"]


@dataclass(frozen=True)
class Answer:
    decision: PermissionDecision
    source: Source


@dataclass
class Pending:
    request_id: str
    request: Message
    recheck: Callable[[], Answer | None]
    """Re-run the policy: an Answer when the call no longer needs asking."""
    future: asyncio.Future[Answer]


class PermissionBroker:
    def __init__(self, emit: Callable[[Message], Awaitable[None]], warn: Callable[[str], None]) -> None:
        self._emit = emit
        self._warn = warn
        self._pending: dict[str, Pending] = {}

    @property
    def pending_requests(self) -> list[Message]:
        return [p.request for p in self._pending.values()]

    def __len__(self) -> int:
        return len(self._pending)

    async def ask(self, request_id: str, request: Message, recheck: Callable[[], Answer | None]) -> Answer:
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = Pending(request_id, request, recheck, future)
        try:
            await self._emit(request)
            return await future
        finally:
            self._pending.pop(request_id, None)

    def answer(self, message: Message) -> bool:
        """Apply a ``control_response``; False when it matches nothing open (late or unknown)."""
        body = response_payload(message) or {}
        rid = body.get("request_id") if isinstance(body.get("request_id"), str) else None
        pending = self._pending.pop(rid, None) if rid else None
        if pending is None or pending.future.done():
            return False
        if body.get("subtype") == "error":
            pending.future.set_result(Answer(
                PermissionDeny(f"The permission request failed: {body.get('error') or 'unknown error'}"),
                "user_reject"))
            return True
        try:
            decision = parse_permission_decision(body.get("response"))
        except MessageError as exc:
            self._warn(f"invalid permission answer for {rid}: {exc}; treating it as a deny")
            decision = PermissionDeny(f"The permission answer was invalid: {exc}")
        if isinstance(decision, PermissionAllow):
            source: Source = "user_permanent" if decision.updated_permissions else "user_temporary"
        else:
            source = "user_reject"
        pending.future.set_result(Answer(decision, source))
        return True

    async def cancel_all(self) -> None:
        """Withdraw every open request (an interrupt): the waiting calls are cancelled with their turn."""
        for rid in list(self._pending):
            pending = self._pending.pop(rid)
            await self._emit(cancel_request(rid))
            if not pending.future.done():
                pending.future.cancel()

    async def deny_all(self, message: str) -> None:
        """Settle every open request as denied (the input closed): nobody can answer any more."""
        for rid in list(self._pending):
            pending = self._pending.pop(rid)
            await self._emit(cancel_request(rid))
            if not pending.future.done():
                pending.future.set_result(Answer(PermissionDeny(message), "config"))

    async def recheck_all(self) -> None:
        """After a mode or rule change: settle requests the policy now decides by itself."""
        for rid, pending in list(self._pending.items()):
            answer = pending.recheck()
            if answer is None or pending.future.done():
                continue
            self._pending.pop(rid, None)
            await self._emit(cancel_request(rid))
            pending.future.set_result(answer)


def allow_as_configured() -> Answer:
    return Answer(PermissionAllow(updated_input={}), "config")


def deny_as_configured(message: str) -> Answer:
    return Answer(PermissionDeny(message), "config")


