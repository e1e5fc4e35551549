"""Sessions API: S1–S7 (reference §1.3) and the permission list (PROTOCOL.md §3)."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import Conflict, InvalidRequest, NotFound, TetherError
from tether.protocol.archive import ARCHIVE_REASONS, SUCCEEDED_ON_RESTART
from tether.protocol.ids import new_body
from tether.protocol.runner_policy import (
    RunnerCandidate,
    RunnerPolicyError,
    check_auth,
    check_session_context,
    pick_runner,
)
from tether.server import jsonio
from tether.server.api.common import (
    JSONResponse,
    bearer,
    ctx_of,
    parse_session_id,
    query_int,
    read_object,
    user,
)
from tether.server.api.direct import frames_first
from tether.server.api.environments import environment_json, is_online
from tether.server.auth.secrets import kind_of
from tether.server.auth.service import Principal
from tether.server.broker import SessionClosed
from tether.server.clock import iso, now
from tether.server.context import ServerContext
from tether.server.hub import Ingest, session_json
from tether.server.store import EventIn, Tx

router = APIRouter()
MODES = ("default", "acceptEdits", "bypassPermissions", "plan", "dontAsk")


async def _online(tx: Tx, session: dict[str, Any], poll_interval_s: float) -> bool | None:
    if not session["environment_id"]:
        return None
    env = await tx.get_environment(session["environment_id"])
    return environment_json(env, 0, poll_interval_s)["online"] if env else False


def _title(body: dict[str, Any]) -> str | None:
    title = body.get("title")
    if title is None:
        return None
    if not isinstance(title, str) or len(title) > 500:
        raise InvalidRequest("'title' must be a string of at most 500 characters.")
    return title.strip()


def _initial_events(body: dict[str, Any]) -> list[Any]:
    events = body.get("events")
    events = [] if events is None else events
    if not isinstance(events, list):
        raise InvalidRequest("'events' must be a list.")
    out = []
    for item in events:
        if isinstance(item, dict) and item.get("type") == "event" and "data" in item:
            out.append(item["data"])
        else:
            out.append(item)
    return out


async def create_session_row(request: Request, principal: Any, body: dict[str, Any], *, kind: str,
                             initial: list[EventIn] | None = None) -> dict[str, Any]:
    """Create the session, its first inbound events and its work item in one transaction."""
    ctx = ctx_of(request)
    title = _title(body)
    env_id = body.get("environment_id")
    if env_id is not None and (not isinstance(env_id, str) or not env_id):
        raise InvalidRequest("'environment_id' must be a non-empty string.")
    mode = body.get("permission_mode")
    if mode is not None and mode not in MODES:
        raise InvalidRequest(f"'permission_mode' must be one of {', '.join(MODES)}.")
    context = body.get("session_context")
    context = {} if context is None else context
    if not isinstance(context, dict):
        raise InvalidRequest("'session_context' must be an object.")
    target = body.get("target")
    if target is not None and target != "runner":
        raise InvalidRequest("'target' must be 'runner' (or left out).")
    if target is not None and env_id is not None:
        raise InvalidRequest("Give 'environment_id' or 'target', not both.")
    try:
        check_session_context(context)
        auth = check_auth(body.get("auth"))
    except RunnerPolicyError as exc:
        raise InvalidRequest(str(exc)) from None
    tags = body.get("tags")
    tags = [] if tags is None else tags
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidRequest("'tags' must be a list of strings.")
    source = body.get("source")
    if source is not None and not isinstance(source, str):
        raise InvalidRequest("'source' must be a string.")
    limit = ctx.config.limits.max_event_bytes
    jsonio.check_size(context, limit, "'session_context'")
    jsonio.check_size(tags, limit, "'tags'")
    t = now()
    async with ctx.store.write() as tx:
        env = None
        if target == "runner":
            env_id = await _pick_runner(tx, principal.org_id, ctx.config.poll_interval_s)
        if env_id is not None:
            env = await tx.get_environment(env_id)
            if env is None or env["org_id"] != principal.org_id:
                raise NotFound("No such environment.")
        row = await tx.insert_session(
            id=new_body(), org_id=principal.org_id, user_id=principal.user_id, environment_id=env_id, kind=kind,
            title=title or "", title_explicit=bool(title), status="idle", source=source,
            permission_mode=mode, session_context=context, tags=tags, worker_epoch=0, last_seq=0,
            created_at=t, updated_at=t, archived_at=None, worker_status=None, worker_last_seen=None,
            external_metadata={}, internal_metadata={"_runner_auth": auth} if auth else {}, archive_reason=None,
            successor_id=None,
        )
        if env is not None:
            await _link_predecessor(tx, env, row["id"])
        await tx.insert_audit(principal.org_id, principal.user_id, "session.create", f"session_{row['id']}",
                              {"environment_id": env_id}, t)
        result = Ingest(stored=await tx.append_events(row, initial or [], t))
        await ctx.hub.client_effects(tx, row, result, actor=principal.user_id)
        if result.stored:
            await tx.update_session(row["id"], status=row["status"], title=row["title"])
        tx.after_commit(lambda: ctx.hub.publish(row["id"], result))
    return row


async def _link_predecessor(tx: Tx, env: dict[str, Any], body: str) -> None:
    """A session created on a machine and directory whose last session ended because its bridge
    went away (or was replaced) continues it: record it as that session's successor."""
    if not env["directory"]:
        return
    previous = await tx.session_to_succeed(env["org_id"], env["machine_name"], env["directory"],
                                           sorted(SUCCEEDED_ON_RESTART))
    if previous is not None:
        await tx.update_session(previous, successor_id=body)


async def _pick_runner(tx: Tx, org_id: str, poll_interval_s: float) -> str:
    """``target: "runner"``: the organisation's online runner (``cloud`` environment) with the most
    free room; 409 ``runner_unavailable`` when none is online (a state of the organisation, not a
    server fault: clients must not retry it as a 5xx)."""
    envs = [e for e in await tx.list_environments(org_id) if e["kind"] == "cloud" and e["state"] == "active"]
    counts = await tx.active_session_counts([e["id"] for e in envs])
    chosen = pick_runner([RunnerCandidate(e["id"], is_online(e, poll_interval_s, now()), counts.get(e["id"], 0),
                                          int(e["max_sessions"])) for e in envs])
    if chosen is None:
        raise TetherError("No runner is online for this organisation. Start one with `tether runner` (or "
                          "`tether server --runner`), or create the session on a machine's environment.",
                          error_type="runner_unavailable", status=409)
    return chosen


@router.post("/v1/sessions")
async def create_session(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_writer()
    principal.require_policy()
    body = await read_object(request)
    initial = _initial_events(body)
    items = ctx.hub.client_items(initial)  # validate before creating anything
    row = await create_session_row(request, principal, body, kind="env", initial=items)
    return await _session_response(request, row["id"], principal.org_id)


async def _session_response(request: Request, body: str, org_id: str) -> Response:
    ctx = ctx_of(request)
    async with ctx.store.read() as tx:
        session = await tx.get_session(body)
        if session is None or session["org_id"] != org_id:
            raise NotFound("No such session.")
        online = await _online(tx, session, ctx.config.poll_interval_s)
    return JSONResponse(session_json(session, online=online, heartbeat_ttl_s=ctx.config.worker_heartbeat_ttl_s))


@router.get("/v1/sessions/{session_id}")
async def get_session(session_id: str, request: Request) -> Response:
    body = parse_session_id(session_id)
    principal = await user(request)
    return await _session_response(request, body, principal.org_id)


async def _require_writer_of(ctx: ServerContext, sbody: str, principal: Principal) -> None:
    """Another organisation's session is 404 whatever the caller's role (no existence oracle,
    docs/protocol.md §1); only then does a viewer learn that it may not write (403)."""
    async with ctx.store.read() as tx:
        await ctx.hub.load_session(tx, sbody, principal.org_id)
    principal.require_writer()


@router.patch("/v1/sessions/{session_id}")
async def patch_session(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request, write=True)
    await _require_writer_of(ctx, sbody, principal)
    body = await read_object(request, allow_empty=False)
    title = _title(body)
    if title is None:
        raise InvalidRequest("'title' is required.")
    explicit = body.get("explicit", True)
    if not isinstance(explicit, bool):
        raise InvalidRequest("'explicit' must be a boolean.")
    async with ctx.store.write() as tx:
        session = await ctx.hub.load_session(tx, sbody, principal.org_id, for_update=True)
        if not explicit and session["title_explicit"]:
            # A derived title (a REPL bridge's placeholder or summary) never replaces one a person chose.
            return await _session_response(request, sbody, principal.org_id)
        await tx.update_session(sbody, title=title, title_explicit=explicit, updated_at=now())
        session["title"] = title
        frame = ctx.hub.session_update_frame(session)
        tx.after_commit(lambda: ctx.hub.publish_frames(sbody, [frame]))
    return await _session_response(request, sbody, principal.org_id)


@router.post("/v1/sessions/{session_id}/archive")
async def archive(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request, write=True)
    await _require_writer_of(ctx, sbody, principal)
    body = await read_object(request)
    reason = body.get("reason")
    if reason is not None and reason not in ARCHIVE_REASONS:
        raise InvalidRequest(f"'reason' must be one of {', '.join(ARCHIVE_REASONS)}.")
    t = now()
    async with ctx.store.write() as tx:
        session = await ctx.hub.load_session(tx, sbody, principal.org_id, for_update=True)
        if session["archived_at"]:
            raise Conflict("The session is already archived.", error_type="already_archived")
        await ctx.hub.expire_permissions(tx, session, "archived")
        await tx.update_session(sbody, status="archived", archived_at=t, updated_at=t, archive_reason=reason)
        await ctx.dispatcher.supersede(tx, sbody, close_streams=False)  # SessionClosed closes them: 4001
        await tx.insert_audit(principal.org_id, principal.user_id, "session.archive", f"session_{sbody}",
                              {"reason": reason} if reason else None, t)
        session.update(status="archived", archived_at=t, archive_reason=reason)
        frame = ctx.hub.session_update_frame(session)

        def fan_out() -> None:
            ctx.hub.publish_frames(sbody, [frame, SessionClosed()])

        tx.after_commit(fan_out)
    return await _session_response(request, sbody, principal.org_id)


@router.post("/v1/sessions/{session_id}/events")
async def post_events(session_id: str, request: Request) -> Response:
    """S5 (user credential) and E9 (worker token answering a permission)."""
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    token = bearer(request)
    if token is not None and kind_of(token) == "jwt":
        claims = ctx.auth.worker_for_session(token, sbody)
        await ctx.dispatcher.check_worker_write(claims)
        body = await read_object(request, allow_empty=False)
        events = _events_list(body, ctx.config.limits.max_v1_batch)
        for event in events:
            if not isinstance(event, dict) or event.get("type") != "control_response":
                raise InvalidRequest("A worker token may only post control_response events here.")
            await ctx.hub.answer_permission(sbody, None, "worker", event)
        return JSONResponse({})
    principal = await user(request, write=True)
    await _require_writer_of(ctx, sbody, principal)
    body = await read_object(request, allow_empty=False)
    events = _events_list(body, ctx.config.limits.max_v1_batch)
    result = await ctx.hub.post_client_events(sbody, principal.org_id, principal.user_id, events)
    await frames_first(len(events))  # a prompt's frames (SSE, subscribers) before this answer
    return JSONResponse({
        "events": [{"uuid": e.uuid, "event_id": e.event_id, "sequence_num": e.seq} for e in result.stored],
    })


def _events_list(body: dict[str, Any], limit: int) -> list[Any]:
    events = body.get("events")
    if not isinstance(events, list) or not events:
        raise InvalidRequest("'events' must be a non-empty list.")
    if len(events) > limit:
        raise InvalidRequest(f"At most {limit} events per request.", error_type="payload_too_large",
                             status=413)
    return events


@router.get("/v1/sessions/{session_id}/events")
async def list_events(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request)
    limit = query_int(request, "limit", 100, lo=1, hi=1000) or 100
    q = request.query_params
    async with ctx.store.read() as tx:
        await ctx.hub.load_session(tx, sbody, principal.org_id)
        before = await _anchor(tx, sbody, q.get("before_id"))
        after = await _anchor(tx, sbody, q.get("after_id"))
        # at most ``limit`` events and ``max_page_bytes`` of them (has_more says there is more)
        page, has_more = await tx.events_page(sbody, limit=limit, after_seq=after, before_seq=before,
                                              max_bytes=ctx.config.limits.max_page_bytes)
    data = [orjson.loads(ev.client_frame) for ev in page]
    return JSONResponse({
        "data": data, "has_more": has_more,
        "first_id": page[0].event_id if page else None, "last_id": page[-1].event_id if page else None,
    })


async def _anchor(tx: Tx, sbody: str, event_id: str | None) -> int | None:
    if event_id is None:
        return None
    ev = await tx.event_by_id(sbody, event_id)
    if ev is None:
        raise InvalidRequest(f"Unknown event id {event_id!r}.")
    return ev.seq


@router.get("/v1/sessions")
async def list_sessions(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    limit = query_int(request, "limit", 100, lo=1, hi=1000) or 100
    status = request.query_params.get("status")
    if status is not None and status not in ("idle", "running", "requires_action", "archived"):
        raise InvalidRequest("'status' must be idle, running, requires_action or archived.")
    env_id = request.query_params.get("environment_id")
    async with ctx.store.read() as tx:
        rows = await tx.list_sessions(principal.org_id, limit=limit + 1, environment_id=env_id, status=status)
        envs = {e["id"]: e for e in await tx.list_environments(principal.org_id)}
    data = []
    for row in rows[:limit]:
        env = envs.get(row["environment_id"]) if row["environment_id"] else None
        online = environment_json(env, 0, ctx.config.poll_interval_s)["online"] if env else None
        data.append(session_json(row, online=online, heartbeat_ttl_s=ctx.config.worker_heartbeat_ttl_s))
    return JSONResponse({
        "data": data, "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None,
    })


@router.get("/v1/sessions/{session_id}/permissions")
async def list_permissions(session_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    sbody = parse_session_id(session_id)
    principal = await user(request)
    status = request.query_params.get("status")
    async with ctx.store.read() as tx:
        await ctx.hub.load_session(tx, sbody, principal.org_id)
        rows = await tx.list_permissions(sbody, status)
    return JSONResponse({"data": [permission_json(r) for r in rows]})


def permission_json(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "request_id": row["request_id"],
        "session_id": f"session_{row['session_id']}",
        "tool_name": row["tool_name"],
        "input": row["input"],
        "tool_use_id": row["tool_use_id"],
        "description": row["description"],
        "permission_suggestions": row["permission_suggestions"],
        "status": row["status"],
        "sequence_num": row["seq"],
        "created_at": iso(row["created_at"]),
        "answered_by": row["answered_by"],
        "answered_at": iso(row["answered_at"]),
        "decision": row["decision"],
    }


