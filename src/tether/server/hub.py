"""The session hub: validates and appends events to a session's log, applies their side
effects (status, permission requests, titles, deliveries) in the same transaction, and
fans them out after the commit, in sequence order (PROTOCOL.md §4.2–4.6)."""

from __future__ import annotations

import logging
import uuid as uuidlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from tether.errors import Conflict, InvalidRequest, NotFound, PayloadTooLarge, PermissionDenied
from tether.protocol import json_depth, titles
from tether.protocol.delivery import V1Turns, v1_turns
from tether.protocol.ids import new_id
from tether.server import jsonio
from tether.server.broker import Broker, Live, SessionClosed, client_topic, inbound_topic
from tether.server.broker import delivery_frame as _delivery_frame
from tether.server.clock import iso, now
from tether.server.config import Config
from tether.server.dispatch import Dispatcher
from tether.server.store import EventIn, Store, StoredEvent, Tx

log = logging.getLogger("tether.server.hub")



@dataclass
class Ingest:
    """What one write did: the new events, and the frames to fan out after commit."""

    stored: list[StoredEvent] = field(default_factory=list)
    ordered: list[StoredEvent] | None = None  # stored + ephemeral in input order, when there are both
    live: list[Any] = field(default_factory=list)
    status: str | None = None
    replies: list[dict[str, Any]] = field(default_factory=list)  # server → worker control responses


def _check_event(obj: Any, max_bytes: int, depth_room: int | None = None) -> tuple[dict[str, Any], str]:
    """``obj`` as an event (a ``uuid`` added if it has none) and its JSON text; with
    ``depth_room``, also the depth limit (a bracket count of the text, rarely a walk)."""
    if not isinstance(obj, dict):
        raise InvalidRequest("Each event must be a JSON object.")
    kind = obj.get("type")
    if not isinstance(kind, str) or not kind:
        raise InvalidRequest("Each event needs a string 'type'.")
    if "uuid" in obj and not isinstance(obj["uuid"], str):
        raise InvalidRequest("An event's 'uuid' must be a string.")
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


CLIENT_CONTROL_SUBTYPES = ("interrupt", "set_model", "set_permission_mode", "set_max_thinking_tokens",
                           "end_session", "tether_take_over", "tether_return_to_terminal")
# tether_take_over / tether_return_to_terminal: move a `tether claude` session between its terminal
# and remote clients (docs/protocol.md §15); a worker without a terminal answers them with an error.


def check_client_event(obj: dict[str, Any]) -> None:
    """What a client may send a worker: prompts and a few control requests, well formed.

    A malformed prompt would be refused by the agent after it was acknowledged here, so it
    is refused here instead (400), before anything is stored.
    """
    kind = obj["type"]
    if kind == "user":
        message = obj.get("message")
        if not isinstance(message, dict) or message.get("role", "user") != "user":
            raise InvalidRequest("A user event needs 'message': {'role': 'user', 'content': …}.")
        content = message.get("content")
        if not isinstance(content, str | list) or (isinstance(content, list)
                                                    and not all(isinstance(b, dict) for b in content)):
            raise InvalidRequest("'message.content' must be a string or a list of content blocks.")
        attachments = obj.get("file_attachments")
        if attachments is not None and not (isinstance(attachments, list) and all(
                isinstance(a, dict) and isinstance(a.get("file_uuid"), str) for a in attachments)):
            raise InvalidRequest("'file_attachments' must be a list of {file_uuid, file_name}.")
    elif kind == "control_request":
        request = obj.get("request")
        if not isinstance(obj.get("request_id"), str) or not obj["request_id"]:
            raise InvalidRequest("A control_request needs a non-empty string 'request_id'.")
        if not isinstance(request, dict) or request.get("subtype") not in CLIENT_CONTROL_SUBTYPES:
            raise InvalidRequest(f"control_request.request.subtype must be one of {', '.join(CLIENT_CONTROL_SUBTYPES)}.")
    elif kind != "control_response":
        raise InvalidRequest(f"Clients may send 'user' and 'control_request' events, not {kind!r}.")


MIRROR_TAG = "ccr-mirror"


def refuse_mirror_input(session: dict[str, Any]) -> None:
    """A mirror session (tagged ``ccr-mirror``) is outbound only: clients watch, never drive it."""
    if MIRROR_TAG in (session.get("tags") or ()):
        raise PermissionDenied("This session is a mirror (outbound only): clients can watch it but not send "
                               "prompts, answer permissions or interrupt. Use the terminal it runs in.")


def normalize_request_id(msg: dict[str, Any]) -> str | None:
    """``control_response.response.request_id`` (camelCase ``requestId`` accepted, reference §3.1)."""
    resp = msg.get("response")
    if isinstance(resp, dict):
        rid = resp.get("request_id", resp.get("requestId"))
        if isinstance(rid, str):
            return rid
    rid = msg.get("request_id", msg.get("requestId"))
    return rid if isinstance(rid, str) else None


class Hub:
    def __init__(self, config: Config, store: Store, broker: Broker, dispatcher: Dispatcher) -> None:
        self.config = config
        self.store = store
        self.broker = broker
        self.dispatcher = dispatcher
        # request ids of the server's own control requests (initialize) whose answers are not logged
        self.server_request_ids: set[str] = set()
        # last sequence number fanned out per session: the mark ephemeral events carry
        self.hwm: dict[str, int] = {}
        self.last_update: dict[str, bytes] = {}

    # ---- fan-out --------------------------------------------------------------------------
    def publish(self, body: str, result: Ingest) -> None:
        """Every event to the session's subscribers; the inbound ones (with a delivery state)
        also to its worker streams, which read nothing else (broker/items.py)."""
        clients, inbound, broker = client_topic(body), inbound_topic(body), self.broker
        for ev in result.ordered if result.ordered is not None else result.stored:
            broker.publish(clients, ev)
            if ev.delivery is not None and not ev.ephemeral:
                broker.publish(inbound, ev)
        extra = [ev for ev in result.stored if ev.source == "server"] if result.ordered is not None else []
        for ev in extra:
            broker.publish(clients, ev)
            if ev.delivery is not None:
                broker.publish(inbound, ev)
        if result.stored:
            if len(self.hwm) > 100_000:
                self.hwm.clear()
            self.hwm[body] = max(self.hwm.get(body, 0), max(ev.seq for ev in result.stored))
        self.publish_frames(body, result.live)

    def session_update_frame(self, session: dict[str, Any]) -> Live:
        return Live(orjson.dumps({
            "type": "session_update",
            "session_id": f"session_{session['id']}",
            "status": session["status"],
            "title": session["title"],
            "sequence_num": session["last_seq"],
            **({"archive_reason": session.get("archive_reason")} if session["archived_at"] else {}),
        }))

    async def load_session(self, tx: Tx, body: str, org_id: str | None = None, *,
                           for_update: bool = False) -> dict[str, Any]:
        session = await tx.get_session(body, for_update=for_update)
        if session is None or (org_id is not None and session["org_id"] != org_id):
            raise NotFound("No such session.")
        return session

    # ---- the write path -------------------------------------------------------------------
    async def append(self, body: str, items: Sequence[EventIn], *, org_id: str | None = None,
                     effects: Any = None, allow_archived: bool = False) -> Ingest:
        """Append ``items`` in one transaction, run ``effects(tx, session, result)``, fan out."""
        result = Ingest()
        async with self.store.write() as tx:
            session = await self.load_session(tx, body, org_id, for_update=True)
            if session["archived_at"] and not allow_archived:
                raise Conflict("The session is archived.", error_type="already_archived")
            before = (session["status"], session["title"])
            result.stored = await tx.append_events(session, items, now())
            if effects is not None:
                await effects(tx, session, result)
            if (session["status"], session["title"]) != before:
                await tx.update_session(body, status=session["status"], title=session["title"],
                                        updated_at=now())
                result.live.append(self.session_update_frame(session))
            result.status = session["status"]
            for reply in result.replies:
                reply_items = [self.server_event(reply)]
                result.stored.extend(await tx.append_events(session, reply_items, now()))
            tx.after_commit(lambda: self.publish(body, result))
        return result

    def server_event(self, payload: dict[str, Any], *, to_worker: bool = True) -> EventIn:
        payload.setdefault("uuid", str(uuidlib.uuid4()))
        return EventIn(payload["uuid"], "server", payload["type"], payload, orjson.dumps(payload).decode(),
                       delivery="pending" if to_worker else None)

    async def expire_permissions(self, tx: Tx, session: dict[str, Any], reason: str) -> list[StoredEvent]:
        """Settle the pending permission requests of a worker that is gone (lease lapsed, work
        stopped, session archived): each becomes ``expired`` and a ``control_cancel_request``
        is logged and fanned out, so no client is left with a prompt nobody will ever read.

        After a lapsed lease the cancel is also delivered to the worker: the same worker may come
        back (a laptop that slept past the lease adopts the re-dispatch) with its agent still
        waiting for that answer, and its session host answers the agent instead
        (docs/protocol.md §4.6)."""
        expired = await tx.expire_pending_permissions(session["id"], now())
        if not expired:
            return []
        to_worker = reason == "lease_lapsed"
        cancels = [self.server_event({"type": "control_cancel_request", "request_id": row["request_id"],
                                      "reason": reason}, to_worker=to_worker) for row in expired]
        stored = await tx.append_events(session, cancels, now())
        if session["status"] == "requires_action":
            session["status"] = "idle" if reason != "archived" else session["status"]
            await tx.update_session(session["id"], status=session["status"])
        result = Ingest(stored=stored)
        body = session["id"]
        tx.after_commit(lambda: self.publish(body, result))
        return stored

    def publish_frames(self, body: str, frames: Sequence[Live | SessionClosed]) -> None:
        """``Live`` frames to the session's subscribers, ``SessionClosed`` to its worker streams."""
        clients = client_topic(body)
        for frame in frames:
            if isinstance(frame, SessionClosed):
                self.broker.publish(inbound_topic(body), frame)
                continue
            if frame.frame.startswith(b'{"type":"session_update"'):
                if self.last_update.get(body) == frame.frame:
                    continue  # the same state again says nothing new
                if len(self.last_update) > 100_000:
                    self.last_update.clear()
                self.last_update[body] = frame.frame
            self.broker.publish(clients, frame)

    def publish_ephemeral(self, body: str, hwm: int, payloads: Sequence[tuple[dict[str, Any], str]]) -> None:
        topic = client_topic(body)
        t = now()
        for payload, text in payloads:
            ev = StoredEvent(body, hwm, "", payload.get("uuid", ""), "worker", payload["type"], text, t,
                             ephemeral=True)
            self.broker.publish(topic, ev)

    # ---- client writes --------------------------------------------------------------------
    def client_items(self, raw_events: Sequence[Any]) -> list[EventIn]:
        items = []
        for raw in raw_events:
            obj, text = _check_event(raw, self.config.limits.max_event_bytes)
            if obj["type"] == "keep_alive":
                continue
            check_client_event(obj)
            items.append(EventIn(obj["uuid"], "client", obj["type"], obj, text, delivery="pending"))
        return items

    async def client_effects(self, tx: Tx, session: dict[str, Any], result: Ingest, *,
                             actor: str) -> None:
        for ev in result.stored:
            payload = ev.payload
            if ev.event_type == "user":
                session["status"] = "running"
                if not session["title_explicit"] and not session["title"]:
                    title = titles.derive_title(payload)
                    if title:
                        session["title"] = title
                await tx.insert_audit(session["org_id"], actor, "session.prompt", f"session_{session['id']}",
                                      {"uuid": ev.uuid}, now())
            elif ev.event_type == "control_request":
                req = payload.get("request")
                subtype = req.get("subtype") if isinstance(req, dict) else None
                await tx.insert_audit(session["org_id"], actor, f"session.{subtype or 'control'}",
                                      f"session_{session['id']}", {"request_id": payload.get("request_id")}, now())
        await self.dispatcher.ensure_worker(tx, session)

    async def post_client_events(self, body: str, org_id: str, actor: str, raw_events: Sequence[Any]) -> Ingest:
        items = self.client_items(raw_events)
        for item in items:
            if item.event_type == "control_response":
                raise InvalidRequest("Answer permission requests on the subscribe socket "
                                     "or with a worker token (control_response).")

        async def effects(tx: Tx, session: dict[str, Any], result: Ingest) -> None:
            refuse_mirror_input(session)
            await self.client_effects(tx, session, result, actor=actor)

        return await self.append(body, items, org_id=org_id, effects=effects)

    async def answer_permission(self, body: str, org_id: str | None, actor: str,
                                message: dict[str, Any]) -> Ingest:
        """First writer wins (PROTOCOL.md §4.6); a later answer raises Conflict already_resolved."""
        obj, text = _check_event(message, self.config.limits.max_event_bytes)
        request_id = normalize_request_id(obj)
        if not request_id:
            raise InvalidRequest("control_response needs response.request_id.")
        resp = obj.get("response")
        if not isinstance(resp, dict) or resp.get("subtype") not in ("success", "error"):
            raise InvalidRequest("control_response.response.subtype must be 'success' or 'error'.")
        if isinstance(resp, dict) and "request_id" not in resp:
            obj["response"] = {**resp, "request_id": request_id}
            text = orjson.dumps(obj).decode()
        decision = resp.get("response") if resp.get("subtype") == "success" else None
        behavior = decision.get("behavior") if isinstance(decision, dict) else None
        if resp.get("subtype") == "success" and behavior not in ("allow", "deny"):
            raise InvalidRequest("A permission answer needs response.response.behavior 'allow' or 'deny'.")
        item = EventIn(obj["uuid"], "client", "control_response", obj, text, delivery="pending")

        async def effects(tx: Tx, session: dict[str, Any], result: Ingest) -> None:
            refuse_mirror_input(session)
            perm = await tx.get_permission(session["id"], request_id)
            if perm is None:
                raise NotFound(f"No permission request {request_id} in this session.")
            if True:
                if perm["status"] != "pending" and result.stored:
                    raise Conflict(f"Permission request {request_id} is already {perm['status']}.",
                                   error_type="already_resolved")
                if result.stored:
                    status = "allowed" if behavior == "allow" else "denied"
                    await tx.update_permission(session["id"], request_id, status=status, answered_by=actor,
                                               answered_at=now(), decision=decision)
                    if session["status"] == "requires_action" and not await tx.list_permissions(
                            session["id"], "pending"):
                        session["status"] = "running"
                    await tx.insert_audit(session["org_id"], actor, "permission.answer",
                                          f"session_{session['id']}",
                                          {"request_id": request_id, "behavior": behavior}, now())
            await self.dispatcher.ensure_worker(tx, session)

        async with self.store.read() as rtx:
            perm = await rtx.get_permission(body, request_id)
        if perm is not None and perm["status"] != "pending":
            raise Conflict(f"Permission request {request_id} is already {perm['status']}.",
                           error_type="already_resolved")
        return await self.append(body, [item], org_id=org_id, effects=effects)

    # ---- worker writes --------------------------------------------------------------------
    async def post_worker_events(self, body: str, raw_events: Sequence[Any], *,
                                 ephemeral_flags: Sequence[bool] | None = None, v1: bool = True,
                                 depth_room: int | None = None) -> Ingest:
        """Worker output (I2, WS frames, W6): durable events are logged, ephemeral ones fanned
        out live; subscribers get both in the order the worker wrote them. ``depth_room``: how
        deep each event may nest, for a batch whose body was parsed unchecked (jsonio.check_batch)."""
        durable: list[EventIn] = []
        order: list[EventIn | tuple[dict[str, Any], str]] = []
        for index, raw in enumerate(raw_events):
            obj, text = _check_event(raw, self.config.limits.max_event_bytes, depth_room)
            kind = obj["type"]
            if kind == "keep_alive":
                continue
            if kind == "control_response" and normalize_request_id(obj) in self.server_request_ids:
                self.server_request_ids.discard(normalize_request_id(obj) or "")
                continue
            flagged = bool(ephemeral_flags[index]) if ephemeral_flags else False
            if kind == "stream_event" or flagged:
                order.append((obj, text))
                continue
            item = EventIn(obj["uuid"], "worker", kind, obj, text)
            durable.append(item)
            order.append(item)
        if not durable:
            if order:
                self.publish_ephemeral(body, await self.high_water(body), order)  # type: ignore[arg-type]
            return Ingest()
        # v1: echoes of logged prompts are deduplicated away, yet they say a turn started, and a
        # stored result that it ended (v1_turns). v2 workers report delivery themselves (W9).
        payloads = [i.payload for i in durable] if v1 else []

        async def effects(tx: Tx, session: dict[str, Any], res: Ingest) -> None:
            base = res.stored[0].seq - 1 if res.stored else int(session["last_seq"])
            turns = v1_turns(payloads, {ev.uuid for ev in res.stored if ev.event_type == "result"}) \
                if v1 else V1Turns()
            await self.worker_effects(tx, session, res, turns)
            res.ordered = self.interleave(body, base, order, res.stored)

        return await self.append(body, durable, effects=effects)

    def interleave(self, body: str, base: int, order: Sequence[EventIn | tuple[dict[str, Any], str]],
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
        cached = self.hwm.get(body)
        if cached is not None:
            return cached
        async with self.store.read() as tx:
            session = await tx.get_session(body)
        if session is None:
            raise NotFound("No such session.")
        return int(session["last_seq"])

    async def worker_effects(self, tx: Tx, session: dict[str, Any], result: Ingest, turns: V1Turns) -> None:
        t = now()
        for ev in result.stored:
            payload = ev.payload
            kind = ev.event_type
            if kind == "result":
                session["status"] = "idle"
            elif kind == "control_request":
                await self._worker_control_request(tx, session, ev, result)
            elif kind == "control_cancel_request":
                rid = payload.get("request_id")
                if isinstance(rid, str):
                    perm = await tx.get_permission(session["id"], rid)
                    if perm is not None and perm["status"] == "pending":
                        await tx.update_permission(session["id"], rid, status="cancelled", answered_by="worker",
                                                   answered_at=t)
                        if not await tx.list_permissions(session["id"], "pending"):
                            if session["status"] == "requires_action":
                                session["status"] = "running"
            elif kind == "control_response":
                await self._local_answer(tx, session, payload)
            elif kind == "assistant" and session["status"] == "idle":
                session["status"] = "running"
        if turns.moves:
            await self.confirm_turns(tx, session, result, turns)

    async def _local_answer(self, tx: Tx, session: dict[str, Any], payload: dict[str, Any]) -> None:
        """A REPL bridge's worker answering a permission request itself: the person at its terminal
        answered first (PROTOCOL.md §4.6). Recorded like a client's answer, by ``local``; an answer
        that comes too late (or an agent echoing a client's answer) changes nothing."""
        rid = normalize_request_id(payload)
        resp = payload.get("response")
        decision = resp.get("response") if isinstance(resp, dict) and resp.get("subtype") == "success" else None
        behavior = decision.get("behavior") if isinstance(decision, dict) else None
        if rid is None or behavior not in ("allow", "deny"):
            return
        perm = await tx.get_permission(session["id"], rid)
        if perm is None or perm["status"] != "pending":
            return
        await tx.update_permission(session["id"], rid, status="allowed" if behavior == "allow" else "denied",
                                   answered_by="local", answered_at=now(), decision=decision)
        if session["status"] == "requires_action" and not await tx.list_permissions(session["id"], "pending"):
            session["status"] = "running"

    async def confirm_turns(self, tx: Tx, session: dict[str, Any], result: Ingest, turns: V1Turns) -> None:
        """v1 (docs/protocol.md §4.4): an echoed prompt is ``processing`` until a result after it
        is stored, so a worker that dies mid-turn leaves it to the next one."""
        moved = []
        if turns.started:
            moved += await tx.set_delivery(session["id"], uuids=turns.started, status="processing")
        if turns.finished:
            last_result = max(ev.seq for ev in result.stored if ev.event_type == "result")
            moved += await tx.finish_started_prompts(session["id"], last_result)
        if turns.started_after:
            moved += await tx.set_delivery(session["id"], uuids=turns.started_after, status="processing")
        for ev in moved:
            result.live.append(delivery_frame(ev))

    async def _worker_control_request(self, tx: Tx, session: dict[str, Any], ev: StoredEvent,
                                      result: Ingest) -> None:
        payload = ev.payload
        raw_req = payload.get("request")
        req: dict[str, Any] = raw_req if isinstance(raw_req, dict) else {}
        rid = payload.get("request_id")
        subtype = req.get("subtype")
        if subtype == "can_use_tool" and isinstance(rid, str):
            await tx.insert_permission(
                session_id=session["id"], request_id=rid, tool_name=str(req.get("tool_name", "")),
                input=req.get("input") if isinstance(req.get("input"), dict) else {},
                tool_use_id=req.get("tool_use_id") if isinstance(req.get("tool_use_id"), str) else None,
                description=req.get("description") if isinstance(req.get("description"), str) else None,
                permission_suggestions=req.get("permission_suggestions"), status="pending", seq=ev.seq,
                request=ev.payload_json, created_at=now(),
            )
            session["status"] = "requires_action"
        elif isinstance(rid, str):
            # The worker asks its SDK host (hook_callback, elicitation, mcp_message …): Tether
            # plays that host and declines, so the worker never waits forever.
            result.replies.append({
                "type": "control_response",
                "response": {"subtype": "error", "request_id": rid,
                             "error": f"Unsupported control request subtype: {subtype}"},
            })

    async def client_frames_for_status(self, body: str) -> None:
        async with self.store.read() as tx:
            session = await tx.get_session(body)
        if session is not None:
            self.broker.publish(client_topic(body), self.session_update_frame(session))


def delivery_frame(ev: StoredEvent) -> Live:
    return _delivery_frame(ev.event_id, ev.uuid, ev.seq, ev.delivery or "pending")


def worker_connected(session: dict[str, Any], heartbeat_ttl_s: float = 60.0) -> bool:
    """v1: an open worker socket; v2: a worker state or heartbeat within the TTL."""
    status = session["worker_status"]
    if status in (None, "disconnected"):
        return False
    if status == "connected":
        return True
    return now() - float(session["worker_last_seen"] or 0) < heartbeat_ttl_s


def session_json(session: dict[str, Any], *, online: bool | None = None, prefix: str = "session_",
                 heartbeat_ttl_s: float = 60.0) -> dict[str, Any]:
    return {
        "type": "session",
        "id": f"{prefix}{session['id']}",
        "title": session["title"],
        "session_status": session["status"],
        "environment_id": session["environment_id"],
        "created_at": iso(session["created_at"]),
        "updated_at": iso(session["updated_at"]),
        "session_context": session["session_context"] or {},
        "source": session["source"],
        "permission_mode": session["permission_mode"],
        "tags": session["tags"] or [],
        "last_sequence_num": session["last_seq"],
        "archived_at": iso(session["archived_at"]),
        "archive_reason": session.get("archive_reason"),
        "successor_session_id": f"{prefix}{successor}" if (successor := session.get("successor_id")) else None,
        "worker": {
            "connected": worker_connected(session, heartbeat_ttl_s),
            "status": session["worker_status"],
            "last_seen": iso(session["worker_last_seen"]),
            "epoch": session["worker_epoch"],
        },
        "environment": {"online": online},
    }


def new_event_id() -> str:
    return new_id("evt")
