"""Environments API: E1–E7 (reference §1.2) and the environment list (PROTOCOL.md §3)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import AuthenticationFailed, Gone, InvalidRequest, NotFound
from tether.protocol.ids import is_valid_id, new_id, prefixed_body
from tether.server import jsonio
from tether.server.api.common import (
    JSONResponse,
    bearer,
    ctx_of,
    parse_prefixed,
    parse_session_id,
    rate_limit,
    read_object,
    user,
)
from tether.server.auth.secrets import hash_secret, new_secret
from tether.server.clock import iso, now

router = APIRouter()
ENVIRONMENT_KINDS = ("bridge", "cloud")


def _str_field(body: dict[str, Any], name: str, *, max_len: int = 4096, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"'{name}' is required.")
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidRequest(f"'{name}' must be a string of at most {max_len} characters.")
    return value


def _registration(body: dict[str, Any], max_bytes: int) -> dict[str, Any]:
    max_sessions = body.get("max_sessions", 1)
    if isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or not 1 <= max_sessions <= 1000:
        raise InvalidRequest("'max_sessions' must be an integer from 1 to 1000.")
    metadata = body.get("metadata")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise InvalidRequest("'metadata' must be an object.")
    jsonio.check_size(metadata, max_bytes, "'metadata'")
    worker_type = metadata.get("worker_type", "claude_code")
    if not isinstance(worker_type, str) or len(worker_type) > 64:
        raise InvalidRequest("'metadata.worker_type' must be a short string.")
    kind = body.get("kind", "bridge")
    if kind not in ENVIRONMENT_KINDS:
        raise InvalidRequest("'kind' must be 'bridge' (a developer's machine) or 'cloud' (a runner).")
    return {
        "kind": kind,
        "machine_name": _str_field(body, "machine_name", max_len=300) or "",
        "directory": _str_field(body, "directory") or "",
        "branch": _str_field(body, "branch", max_len=300),
        "git_repo_url": _str_field(body, "git_repo_url"),
        "max_sessions": max_sessions,
        "worker_type": worker_type,
        "metadata": metadata,
    }


@router.post("/v1/environments/bridge")
async def register(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_writer()
    principal.require_policy()
    body = await read_object(request)
    fields = _registration(body, ctx.config.limits.max_event_bytes)
    wanted = body.get("environment_id")
    if wanted is not None and (not is_valid_id(wanted) or prefixed_body(wanted, "env") is None):
        raise InvalidRequest("'environment_id' must be an id this server issued (env_…).")
    secret = new_secret("environment")
    t = now()
    async with ctx.store.write() as tx:
        env = await tx.get_environment(wanted) if wanted else None
        reattach = (env is not None and env["org_id"] == principal.org_id and env["state"] != "expired"
                    and (env["last_poll_at"] or env["created_at"]) > t - ctx.config.environment_ttl_s)
        if reattach and isinstance(wanted, str):
            env_id = wanted
            await tx.update_environment(env_id, **fields, secret_hash=hash_secret(secret), state="active",
                                        last_poll_at=t, user_id=principal.user_id)
        else:
            env_id = new_id("env")
            await tx.insert_environment(id=env_id, org_id=principal.org_id, user_id=principal.user_id,
                                        secret_hash=hash_secret(secret), state="active",
                                        last_poll_at=t, created_at=t, **fields)
        await tx.insert_audit(principal.org_id, principal.user_id, "environment.register", env_id,
                              {"reattached": reattach, "machine_name": fields["machine_name"]}, t)
    return JSONResponse({"environment_id": env_id, "environment_secret": secret})


async def _environment_of_secret(request: Request, env_id: str) -> dict[str, Any]:
    ctx = ctx_of(request)
    token = bearer(request)
    if not token:
        raise AuthenticationFailed("Polling needs 'Authorization: Bearer <environment_secret>'.")
    env = await ctx.auth.environment(token)
    if env["id"] != env_id:
        raise NotFound("No such environment.")
    rate_limit(ctx, env_id)
    return env


@router.get("/v1/environments/{env_id}/work/poll")
async def poll(env_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    parse_prefixed(env_id, "env", "environment")
    env = await _environment_of_secret(request, env_id)
    raw = request.query_params.get("reclaim_older_than_ms")
    reclaim = ctx.config.reclaim_older_than_ms
    if raw:
        # isdigit() alone admits '²' and other Unicode digits that int() refuses
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or not 1 <= int(raw) <= 86_400_000:
            raise InvalidRequest("'reclaim_older_than_ms' must be a positive integer.")
        reclaim = int(raw)
    t = now()
    if env["state"] == "deregistered":
        raise NotFound("The environment was deregistered; register again.")
    if env["state"] == "expired" or (env["last_poll_at"] or env["created_at"]) < t - ctx.config.environment_ttl_s:
        async with ctx.store.write() as tx:
            await tx.update_environment(env_id, state="expired")
        raise Gone("The environment expired after a long time without polling; register again.")
    async with ctx.store.write() as tx:
        await tx.update_environment(env_id, last_poll_at=t)
    ctx.metrics.inc("polls_total")
    item = await ctx.dispatcher.poll(env, reclaim)
    return JSONResponse(item)


async def _work_for_worker(request: Request, env_id: str, work_id: str) -> dict[str, Any]:
    ctx = ctx_of(request)
    parse_prefixed(env_id, "env", "environment")
    parse_prefixed(work_id, "work", "work item")
    token = bearer(request)
    if not token:
        raise AuthenticationFailed("This route needs 'Authorization: Bearer <session_ingress_token>'.")
    claims = ctx.auth.worker(token)
    if claims.environment_id != env_id or (claims.work_id and claims.work_id != work_id):
        # a token of an older dispatch of the same session may ack/heartbeat the current item
        if claims.environment_id != env_id:
            raise NotFound("No such work item.")
    return await ctx.dispatcher.live_work(env_id, work_id, claims.session_body)


@router.post("/v1/environments/{env_id}/work/{work_id}/ack")
async def ack(env_id: str, work_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    row = await _work_for_worker(request, env_id, work_id)
    await read_object(request)
    await ctx.dispatcher.ack(row)
    return JSONResponse({})


@router.post("/v1/environments/{env_id}/work/{work_id}/heartbeat")
async def heartbeat(env_id: str, work_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    row = await _work_for_worker(request, env_id, work_id)
    await read_object(request)
    return JSONResponse(await ctx.dispatcher.heartbeat(row))


async def _own_environment(request: Request, env_id: str) -> tuple[Any, dict[str, Any]]:
    ctx = ctx_of(request)
    parse_prefixed(env_id, "env", "environment")
    principal = await user(request, write=True)
    async with ctx.store.read() as tx:
        env = await tx.get_environment(env_id)
    if env is None or env["org_id"] != principal.org_id:
        raise NotFound("No such environment.")  # before any role check: no existence oracle
    principal.require_writer()
    return principal, env


@router.post("/v1/environments/{env_id}/work/{work_id}/stop")
async def stop(env_id: str, work_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    principal, env = await _own_environment(request, env_id)
    parse_prefixed(work_id, "work", "work item")
    body = await read_object(request)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequest("'force' must be a boolean.")
    async with ctx.store.write() as tx:
        row = await tx.get_work(work_id)
        if row is None or row["environment_id"] != env_id:
            raise NotFound("No such work item.")
        if row["state"] not in ("stopped", "superseded"):
            await ctx.dispatcher.stop(tx, row, force)
    return JSONResponse({})


@router.delete("/v1/environments/bridge/{env_id}")
async def deregister(env_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    principal, env = await _own_environment(request, env_id)
    t = now()
    async with ctx.store.write() as tx:
        for row in await tx.work_of_environment(env_id, ("queued", "delivered", "acked")):
            await ctx.dispatcher.end_work(tx, row, "stopped")
            session = await tx.get_session(row["session_id"], for_update=True)
            await ctx.dispatcher.worker_gone(tx, session, "environment_deregistered")
        await tx.update_environment(env_id, state="deregistered")
        await tx.insert_audit(principal.org_id, principal.user_id, "environment.deregister", env_id, None, t)
    return JSONResponse({})


@router.post("/v1/environments/{env_id}/bridge/reconnect")
async def reconnect(env_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    principal, env = await _own_environment(request, env_id)
    principal.require_policy()
    body = await read_object(request)
    raw = body.get("session_id")
    if not isinstance(raw, str):
        raise InvalidRequest("'session_id' is required.")
    sbody = parse_session_id(raw)
    async with ctx.store.write() as tx:
        session = await tx.get_session(sbody, for_update=True)
        if session is None or session["org_id"] != principal.org_id or session["environment_id"] != env_id:
            raise NotFound("No such session on this environment.")
        if session["archived_at"]:
            raise NotFound("The session is archived.")
        await ctx.dispatcher.queue_work(tx, session)
        await tx.update_environment(env_id, state="active")
    return JSONResponse({})


def is_online(env: dict[str, Any], poll_interval_s: float, at: float) -> bool:
    """Registered and polled lately (PROTOCOL.md §3: last poll < 2×max(poll interval, 4 s) + 8 s)."""
    last = env["last_poll_at"]
    return bool(env["state"] == "active" and last is not None and at - last < 2 * max(poll_interval_s, 4.0) + 8)


def environment_json(env: dict[str, Any], active: int, poll_interval_s: float) -> dict[str, Any]:
    last = env["last_poll_at"]
    online = is_online(env, poll_interval_s, now())
    return {
        "id": env["id"],
        "kind": env["kind"],
        "machine_name": env["machine_name"],
        "directory": env["directory"],
        "branch": env["branch"],
        "git_repo_url": env["git_repo_url"],
        "max_sessions": env["max_sessions"],
        "worker_type": env["worker_type"],
        "state": env["state"],
        "online": online,
        "active_sessions": active,
        "last_poll_at": iso(last),
        "created_at": iso(env["created_at"]),
    }


@router.get("/v1/environments")
async def list_environments(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    show_all = request.query_params.get("all") in ("1", "true")
    async with ctx.store.read() as tx:
        envs = await tx.list_environments(principal.org_id)
        if not show_all:  # deregistered ones are history; ?all=true lists them too
            envs = [e for e in envs if e["state"] != "deregistered"]
        counts = await tx.active_session_counts([e["id"] for e in envs])
    data = [environment_json(e, counts.get(e["id"], 0), ctx.config.poll_interval_s) for e in envs]
    return JSONResponse({"data": data, "has_more": False})
