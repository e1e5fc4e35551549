"""Answers to permission requests (docs/protocol.md §4.6): the first answer wins, logged as the
client's ``control_response`` and delivered to the worker; any later one is 409 ``already_resolved``.
The states are :mod:`tether.protocol.permissions`' table; expiry when a worker goes is
``effects.expire_pending``."""

from __future__ import annotations

from typing import Any

import orjson

from tether.errors import Conflict, InvalidRequest, NotFound
from tether.protocol.messages import MessageError
from tether.protocol.permissions import AlreadyResolved, parse_answer
from tether.protocol.session_status import next_status
from tether.server.clock import now
from tether.server.hub import Ingest
from tether.server.service.effects import refuse_mirror_input, settle_answer
from tether.server.service.log import EventLog, check_event, load_session
from tether.server.store import EventIn, Store, Tx
from tether.server.store.records import PermissionRecord, SessionRecord

__all__ = ["Permissions"]


class Permissions:
    def __init__(self, store: Store, log: EventLog) -> None:
        self.store = store
        self.log = log

    async def of_session(self, body: str, org_id: str, status: str | None) -> list[PermissionRecord]:
        async with self.store.read() as tx:
            await load_session(tx, body, org_id)
            return await tx.permissions.of_session(body, status)

    async def open_at(self, body: str) -> tuple[int, list[PermissionRecord]]:
        """For a subscriber that opens now: the session's last sequence number (0 if it is gone) and
        its pending requests, read together."""
        async with self.store.read() as tx:
            session = await tx.sessions.get(body)
            pending = await tx.permissions.of_session(body, "pending")
        return (session.last_seq if session else 0), pending

    async def answer(self, body: str, org_id: str | None, actor: str, message: dict[str, Any]) -> Ingest:
        """``actor`` answers with ``message`` (a ``control_response``); ``org_id`` None: a worker token."""
        obj, text = check_event(message, self.log.config.limits.max_event_bytes)
        try:
            answer = parse_answer(obj)
        except MessageError as exc:
            raise InvalidRequest(str(exc)) from None
        resp = obj["response"]
        if "request_id" not in resp:  # stored as the worker reads it
            obj["response"] = {**resp, "request_id": answer.request_id}
            text = orjson.dumps(obj).decode()
        item = EventIn(obj["uuid"], "client", "control_response", obj, text, delivery="pending")

        async def effects(tx: Tx, session: SessionRecord, result: Ingest) -> None:
            refuse_mirror_input(session)
            perm = await tx.permissions.get(session.id, answer.request_id)
            if perm is None:
                raise NotFound(f"No permission request {answer.request_id} in this session.")
            if result.stored:  # (a resent answer, by uuid, is already logged: nothing to settle)
                try:
                    cue = await settle_answer(tx, session.id, perm, answer.how, answer.decision, actor)
                except AlreadyResolved as exc:
                    raise _already(answer.request_id, exc.status) from None
                result.status = next_status(result.status or session.status, cue)
                await tx.audit.insert(session.org_id, actor, "permission.answer", f"session_{session.id}",
                                      {"request_id": answer.request_id, "behavior": answer.how}, now())
            await self.log.dispatcher.ensure_worker(tx, session)

        async with self.store.read() as rtx:  # a late answer is refused before anything is written
            perm = await rtx.permissions.get(body, answer.request_id)
        if perm is not None and perm.status != "pending":
            raise _already(answer.request_id, perm.status)
        return await self.log.append(body, [item], org_id=org_id, effects=effects)


def _already(request_id: str, status: str) -> Conflict:
    return Conflict(f"Permission request {request_id} is already {status}.", error_type="already_resolved")

