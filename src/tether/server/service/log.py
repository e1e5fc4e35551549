"""A session's event log, written: client and worker events are checked, appended in one
transaction with their effects (``effects.py``), and fanned out after the commit in sequence order
(docs/protocol.md §4.2–§4.6). This is the hot path of a worker's POST: keep per-event work out."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import orjson

from tether.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge
from tether.protocol import event_rules, json_depth
from tether.protocol import messages as m
from tether.protocol.access import LIVE_WORK_STATES
from tether.protocol.delivery import V1Turns, v1_turns
from tether.server import jsonio
from tether.server.auth.worker_jwt import WorkerClaims
from tether.server.clock import now
from tether.server.config import Config
from tether.server.hub import Hub, Ingest, Live
from tether.server.service.dispatch import Dispatcher
from tether.server.service.effects import (
    apply_client_events,
    apply_worker_events,
    refuse_mirror_input,
    server_event,
)
from tether.server.store import EventIn, Store, StoredEvent, Tx
from tether.server.store.records import SessionRecord
from tether.server.views import session_update_frame

__all__ = ["EventLog", "load_session"]

Effects = Callable[[Tx, SessionRecord, Ingest], Awaitable[None]]
Ordered = EventIn | tuple[dict[str, Any], str]  # a durable event, or an ephemeral one (payload, text)


async def load_session(tx: Tx, body: str, org_id: str | None = None, *,
                       for_update: bool = False) -> SessionRecord:
    """The session, in the caller's organisation (another's is 404: no existence oracle)."""
    return _in_org(await tx.sessions.get(body, for_update=for_update), org_id)


def _in_org(session: SessionRecord | None, org_id: str | None) -> SessionRecord:
    if session is None or (org_id is not None and session.org_id != org_id):
        raise NotFound("No such session.")
    return session


def check_event(obj: Any, max_bytes: int, depth_room: int | None = None) -> tuple[dict[str, Any], str]:
    """``obj`` as an event (a ``uuid`` added if it has none) and its JSON text; with
    ``depth_room``, also the depth limit (a bracket count of the text, rarely a walk)."""
    try:
        obj = event_rules.check_envelope(obj)
    except m.MessageError as exc:
        raise InvalidRequest(str(exc)) from None
    if not obj.get("uuid"):
        obj = {**obj, "uuid": str(uuidlib.uuid4())}
    try:
        raw = orjson.dumps(obj)
    except orjson.JSONEncodeError:  # deeper than orjson writes (a body parsed unchecked)
        raise jsonio.TooDeep("An event") from None
    if len(raw) > max_bytes:  # bytes, not characters: the worker's line limit counts bytes
        raise PayloadTooLarge(f"An event is larger than {max_bytes} bytes.")
    if depth_room is not None and json_depth.exceeds(raw, obj, depth_room):
        raise jsonio.TooDeep("The request body")
    return obj, raw.decode()


class _WorkNotLive(Exception):
    """The worker token's work item is not live: the transaction is abandoned (see ``append``)."""


class EventLog:
    def __init__(self, config: Config, store: Store, hub: Hub, dispatcher: Dispatcher) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.dispatcher = dispatcher
        # PostgreSQL: a worker token's work item is checked inside the write transaction, with the
        # session row's lock (one statement), not by a read of its own before it. SQLite checks a
        # cache that is never stale there (dispatch.py), before the transaction.
        self.checks_work_in_tx = not store.is_sqlite
        # request ids of the server's own control requests (initialize) whose answers are not logged
        self.server_request_ids: set[str] = set()

    # ---- the write ------------------------------------------------------------------------
    async def append(self, body: str, items: Sequence[EventIn], *, org_id: str | None = None,
                     effects: Effects | None = None, work_id: str | None = None) -> Ingest:
        """Append ``items`` in one transaction, run ``effects(tx, session, result)``, fan out.
        ``work_id`` (PostgreSQL, ``checks_work_in_tx``): a worker token's work item, which must be
        live (else ``_WorkNotLive``, nothing written: see ``_append_checked``)."""
        result = Ingest()
        async with self.store.write() as tx:
            if work_id is None:
                session = await load_session(tx, body, org_id, for_update=True)
            else:
                found, work_state = await tx.sessions.get_with_work(body, work_id)
                session = _in_org(found, org_id)
                if work_state not in LIVE_WORK_STATES:
                    raise _WorkNotLive
            if session.archived_at:
                raise Conflict("The session is archived.", error_type="already_archived")
            result.stored = await tx.events.append(session.id, session.last_seq, items, now())
            if effects is not None:
                await effects(tx, session, result)
            last_seq = result.stored[-1].seq if result.stored else session.last_seq
            status, title = result.status or session.status, result.title or session.title
            if (status, title) != (session.status, session.title):
                await tx.sessions.update(session.id, status=status, title=title, updated_at=now())
                result.live.append(self.update_frame(replace(session, status=status, title=title,
                                                             last_seq=last_seq)))
            result.status = status
            for reply in result.replies:
                replied = await tx.events.append(session.id, last_seq, [server_event(reply)], now())
                result.stored.extend(replied)
                last_seq = replied[-1].seq if replied else last_seq
            tx.after_commit(lambda: self.hub.publish(body, result))
        return result

    def update_frame(self, session: SessionRecord) -> Live:
        return session_update_frame(session, now(), self.config.worker_heartbeat_ttl_s)

    # ---- client writes --------------------------------------------------------------------
    def client_items(self, raw_events: Sequence[Any]) -> list[EventIn]:
        """A client's events, checked (docs/protocol.md §4.7) before anything is stored."""
        items = []
        for raw in raw_events:
            obj, text = check_event(raw, self.config.limits.max_event_bytes)
            if obj["type"] == m.KEEP_ALIVE:
                continue
            try:
                event_rules.check_client_event(obj)
            except m.MessageError as exc:
                raise InvalidRequest(str(exc)) from None
            items.append(EventIn(obj["uuid"], "client", obj["type"], obj, text, delivery="pending"))
        return items

    async def client_effects(self, tx: Tx, session: SessionRecord, result: Ingest, actor: str) -> None:
        await apply_client_events(tx, session, result, actor)
        await self.dispatcher.ensure_worker(tx, session)

    async def post_client_events(self, body: str, org_id: str, actor: str, raw_events: Sequence[Any]) -> Ingest:
        items = self.client_items(raw_events)
        if any(item.event_type == m.CONTROL_RESPONSE for item in items):
            raise InvalidRequest("Answer permission requests on the subscribe socket "
                                 "or with a worker token (control_response).")

        async def effects(tx: Tx, session: SessionRecord, result: Ingest) -> None:
            refuse_mirror_input(session)
            await self.client_effects(tx, session, result, actor)

        return await self.append(body, items, org_id=org_id, effects=effects)

    # ---- worker writes --------------------------------------------------------------------
    async def post_worker_events(self, body: str, raw_events: Sequence[Any], *,
                                 ephemeral_flags: Sequence[bool] | None = None, v1: bool = True,
                                 depth_room: int | None = None, work: WorkerClaims | None = None) -> Ingest:
        """Worker output (I2, WS frames, W6): durable events are logged, ephemeral ones fanned
        out live; subscribers get both in the order the worker wrote them. ``depth_room``: how
        deep each event may nest, for a batch whose body was parsed unchecked (jsonio.check_batch).
        ``work``: the token whose work item the write transaction checks (``checks_work_in_tx``)."""
        durable: list[EventIn] = []
        order: list[Ordered] = []
        for index, raw in enumerate(raw_events):
            obj, text = check_event(raw, self.config.limits.max_event_bytes, depth_room)
            kind = obj["type"]
            if kind == m.KEEP_ALIVE:
                continue
            if kind == m.CONTROL_RESPONSE and self._answers_the_server(obj):
                continue
            if kind == m.STREAM_EVENT or (ephemeral_flags and ephemeral_flags[index]):
                order.append((obj, text))
                continue
            item = EventIn(obj["uuid"], "worker", kind, obj, text)
            durable.append(item)
            order.append(item)
        if not durable:
            if work is not None:  # no transaction to check it in
                await self.dispatcher.check_worker_write(work)
            if order:
                self.hub.publish_ephemeral(body, await self.high_water(body), order)  # type: ignore[arg-type]
            return Ingest()
        # v1: echoes of logged prompts are deduplicated away, yet they say a turn started, and a
        # stored result that it ended (v1_turns). v2 workers report delivery themselves (W9).
        payloads = [i.payload for i in durable] if v1 else []

        async def effects(tx: Tx, session: SessionRecord, res: Ingest) -> None:
            base = res.stored[0].seq - 1 if res.stored else session.last_seq
            turns = v1_turns(payloads, {ev.uuid for ev in res.stored if ev.event_type == m.RESULT}) \
                if v1 else V1Turns()
            await apply_worker_events(tx, session, res, turns)
            res.ordered = self.interleave(body, base, order, res.stored)

        if work is not None and work.work_id is not None:
            return await self._append_checked(body, durable, effects, work)
        return await self.append(body, durable, effects=effects)

    async def _append_checked(self, body: str, items: Sequence[EventIn], effects: Effects,
                              work: WorkerClaims) -> Ingest:
        """PostgreSQL: the append, its transaction checking the token's work item."""
        try:
            return await self.append(body, items, effects=effects, work_id=work.work_id)
        except _WorkNotLive:
            pass
        # the refusal the token has earned (401 replaced, 410 gone, 409 archived); a token being
        # handed over to a re-dispatched item still writes (tether.protocol.access)
        await self.dispatcher.check_worker_write(work)
        return await self.append(body, items, effects=effects)

    def _answers_the_server(self, obj: dict[str, Any]) -> bool:
        """An answer to the server's own control request (initialize): taken, never logged."""
        rid = m.response_request_id(obj)
        if rid is None or rid not in self.server_request_ids:
            return False
        self.server_request_ids.discard(rid)
        return True

    def interleave(self, body: str, base: int, order: Sequence[Ordered],
                   stored: Sequence[StoredEvent]) -> list[StoredEvent]:
        """Durable and ephemeral events in input order; an ephemeral one carries the high-water
        mark of the durable events before it."""
        by_uuid = {ev.uuid: ev for ev in stored}
        hwm, out, t = base, [], now()
        for item in order:
            if isinstance(item, EventIn):
                ev = by_uuid.get(item.uuid)
                if ev is not None:
                    out.append(ev)
                    hwm = ev.seq
            else:
                payload, text = item
                out.append(StoredEvent(body, hwm, "", payload.get("uuid", ""), "worker", payload["type"], text, t,
                                       ephemeral=True))
        return out

    async def high_water(self, body: str) -> int:
        cached = self.hub.hwm.get(body)
        if cached is not None:
            return cached
        async with self.store.read() as tx:
            session = await load_session(tx, body)
        return session.last_seq
