"""What an event does to its session, inside the transaction that logs it (docs/protocol.md §4.2,
§4.6): the status moves by :mod:`tether.protocol.session_status`, permission requests by
:mod:`tether.protocol.permissions`; this module only reads and writes the rows they decide about.

Every function takes the open transaction and the session as read in it; what the session's row
should become goes into the ``Ingest`` (``status``, ``title``), which the caller (``log.EventLog``)
writes once at the end before it fans out after the commit.
"""

from __future__ import annotations

import uuid as uuidlib
from dataclasses import replace
from typing import Any

import orjson

from tether.errors import PermissionDenied
from tether.protocol import event_rules, titles
from tether.protocol import messages as m
from tether.protocol.delivery import V1Turns
from tether.protocol.ids import SessionId
from tether.protocol.messages import MessageError
from tether.protocol.permissions import AlreadyResolved, Settlement, parse_answer, settle
from tether.protocol.session_status import Cue, SessionStatus, next_status, outbound_cue, settled_cue
from tether.server.clock import now
from tether.server.hub import Hub, Ingest, delivery_frame
from tether.server.store import EventIn, StoredEvent, Tx
from tether.server.store.records import PermissionRecord, SessionRecord

__all__ = ["apply_client_events", "apply_worker_events", "expire_pending", "refuse_mirror_input",
           "server_event", "settle_answer"]

LOCAL_ACTOR = "local"  # who answered at a REPL bridge's terminal


def server_event(payload: dict[str, Any], *, to_worker: bool = True) -> EventIn:
    """An event the server itself logs (a declined control request, a cancel for an expired request)."""
    payload.setdefault("uuid", str(uuidlib.uuid4()))
    return EventIn(payload["uuid"], "server", payload["type"], payload, orjson.dumps(payload).decode(),
                   delivery="pending" if to_worker else None)


def refuse_mirror_input(session: SessionRecord) -> None:
    if not event_rules.clients_may_drive(session.tags):
        raise PermissionDenied("This session is a mirror (outbound only): clients can watch it but not send "
                               "prompts, answer permissions or interrupt. Use the terminal it runs in.")


async def apply_client_events(tx: Tx, session: SessionRecord, result: Ingest, actor: str) -> None:
    """Prompts move the status and may name an untitled session; every client action is audited."""
    status: SessionStatus = result.status or session.status
    title = result.title if result.title is not None else session.title
    target = f"session_{session.id}"
    for ev in result.stored:
        if ev.event_type == m.USER:
            status = next_status(status, "prompt")
            if not session.title_explicit and not title:
                title = titles.derive_title(ev.payload) or title
            await tx.audit.insert(session.org_id, actor, "session.prompt", target, {"uuid": ev.uuid}, now())
        elif ev.event_type == m.CONTROL_REQUEST:
            subtype = m.control_subtype(ev.payload)
            await tx.audit.insert(session.org_id, actor, f"session.{subtype or 'control'}", target,
                                  {"request_id": ev.payload.get("request_id")}, now())
    result.status, result.title = status, title


async def apply_worker_events(tx: Tx, session: SessionRecord, result: Ingest, turns: V1Turns) -> None:
    """Worker output: the status cue of each event, the permission requests it opens or settles, the
    server's answer to control requests it cannot serve, and the v1 turns it starts and ends."""
    status: SessionStatus = result.status or session.status
    for ev in result.stored:
        cue = outbound_cue(ev.payload)
        if cue == "permission_asked":
            await _record_request(tx, session.id, ev)
        elif ev.event_type == m.CONTROL_REQUEST:
            _decline(ev, result)
        elif ev.event_type == m.CONTROL_CANCEL_REQUEST:
            cue = await _withdraw(tx, session.id, ev.payload)
        elif ev.event_type == m.CONTROL_RESPONSE:
            cue = await _answered_locally(tx, session.id, ev.payload)
        status = next_status(status, cue)
    result.status = status
    if turns.moves:
        await _confirm_turns(tx, session, result, turns)


async def _confirm_turns(tx: Tx, session: SessionRecord, result: Ingest, turns: V1Turns) -> None:
    """v1 (docs/protocol.md §4.4): an echoed prompt is ``processing`` until a result after it is
    stored, so a worker that dies mid-turn leaves the prompt to the next one."""
    moved = []
    if turns.started:
        moved += await tx.events.set_delivery(session.id, uuids=turns.started, status="processing")
    if turns.finished:
        last_result = max(ev.seq for ev in result.stored if ev.event_type == m.RESULT)
        moved += await tx.events.finish_started_prompts(session.id, last_result)
    if turns.started_after:
        moved += await tx.events.set_delivery(session.id, uuids=turns.started_after, status="processing")
    result.live.extend(delivery_frame(ev) for ev in moved)


async def _record_request(tx: Tx, body: SessionId, ev: StoredEvent) -> None:
    req = m.request_payload(ev.payload) or {}
    await tx.permissions.insert(
        session_id=body, request_id=m.request_id_of(ev.payload), tool_name=str(req.get("tool_name", "")),
        input=req.get("input") if isinstance(req.get("input"), dict) else {},
        tool_use_id=req.get("tool_use_id") if isinstance(req.get("tool_use_id"), str) else None,
        description=req.get("description") if isinstance(req.get("description"), str) else None,
        permission_suggestions=req.get("permission_suggestions"), status="pending", seq=ev.seq,
        request=ev.payload_json, created_at=now(),
    )


def _decline(ev: StoredEvent, result: Ingest) -> None:
    """The worker asks its SDK host (hook_callback, elicitation, mcp_message …): Tether plays that
    host and declines, so the worker never waits forever."""
    rid = ev.payload.get("request_id")
    if isinstance(rid, str):
        result.replies.append(m.control_error(
            rid, f"Unsupported control request subtype: {m.control_subtype(ev.payload)}"))


async def _withdraw(tx: Tx, body: str, payload: dict[str, Any]) -> Cue | None:
    """The worker's ``control_cancel_request``: a pending request becomes ``cancelled``."""
    rid = m.request_id_of(payload)
    if rid is None:
        return None
    perm = await tx.permissions.get(body, rid)
    if perm is None or perm.status != "pending":
        return None
    await tx.permissions.update(body, rid, status=settle(rid, "pending", "cancel"), answered_by="worker",
                                answered_at=now())
    return settled_cue(await tx.permissions.pending_count(body))


async def _answered_locally(tx: Tx, body: str, payload: dict[str, Any]) -> Cue | None:
    """A REPL bridge's worker answering a permission request itself: the person at its terminal
    answered first (docs/protocol.md §4.6). Recorded like a client's answer, by ``local``; an answer
    that comes too late (or an agent echoing a client's answer) changes nothing."""
    try:
        answer = parse_answer(payload)
    except MessageError:
        return None
    if answer.decision is None:  # an error reply is no decision of the terminal's
        return None
    perm = await tx.permissions.get(body, answer.request_id)
    if perm is None:
        return None
    try:
        return await settle_answer(tx, body, perm, answer.how, answer.decision, LOCAL_ACTOR)
    except AlreadyResolved:
        return None


async def settle_answer(tx: Tx, body: str, perm: PermissionRecord, how: Settlement,
                        decision: dict[str, Any] | None, actor: str) -> Cue | None:
    """Record an answer (raises ``AlreadyResolved`` when the request is not pending); the status cue."""
    status = settle(perm.request_id, perm.status, how)
    await tx.permissions.update(body, perm.request_id, status=status, answered_by=actor, answered_at=now(),
                                decision=decision)
    return settled_cue(await tx.permissions.pending_count(body))


async def expire_pending(tx: Tx, hub: Hub, session: SessionRecord, reason: str) -> SessionRecord:
    """Settle the pending permission requests of a worker that is gone (lease lapsed, work stopped,
    session archived): each becomes ``expired`` and a ``control_cancel_request`` is logged and fanned
    out, so no client is left with a prompt nobody will ever read. The session as it is now.

    After a lapsed lease the cancel is also delivered to the worker: the same worker may come back
    (a laptop that slept past the lease adopts the re-dispatch) with its agent still waiting for
    that answer, and its session host answers the agent instead (docs/protocol.md §4.6)."""
    expired = await tx.permissions.expire_pending(session.id, now())
    if not expired:
        return session
    to_worker = reason == "lease_lapsed"
    cancels = [server_event({"type": m.CONTROL_CANCEL_REQUEST, "request_id": perm.request_id,
                             "reason": reason}, to_worker=to_worker) for perm in expired]
    stored = await tx.events.append(session.id, session.last_seq, cancels, now())
    status = session.status if reason == "archived" else next_status(session.status, "worker_gone")
    if status != session.status:
        await tx.sessions.update(session.id, status=status)
    result = Ingest(stored=stored)
    body = session.id
    tx.after_commit(lambda: hub.publish(body, result))
    return replace(session, status=status, last_seq=stored[-1].seq if stored else session.last_seq)
