"""Environments API: E1–E7 (docs/protocol.md §3.2) and the environment list (docs/protocol.md §3)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tether.errors import AuthenticationFailed, InvalidRequest, NotFound
from tether.protocol.ids import is_valid_id, prefixed_body
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
from tether.server.auth.service import Principal
from tether.server.clock import iso, now
from tether.server.service.environments import Registration
from tether.server.store.records import EnvironmentRecord, WorkItem
from tether.server.views import environment_json, work_json

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


def _registration(body: dict[str, Any], max_bytes: int) -> Registration:
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
    return Registration(kind=kind, machine_name=_str_field(body, "machine_name", max_len=300) or "",
                        directory=_str_field(body, "directory") or "", branch=_str_field(body, "branch", max_len=300),
                        git_repo_url=_str_field(body, "git_repo_url"), max_sessions=max_sessions,
                        worker_type=worker_type, metadata=metadata)


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
    env_id, secret = await ctx.environments.register(principal, fields, wanted)
    return JSONResponse({"environment_id": env_id, "environment_secret": secret})


async def _environment_of_secret(request: Request, env_id: str) -> EnvironmentRecord:
    ctx = ctx_of(request)
    token = bearer(request)
    if not token:
        raise AuthenticationFailed("Polling needs 'Authorization: Bearer <environment_secret>'.")
    env = await ctx.auth.environment(token)
    if env.id != env_id:
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
    await ctx.environments.polled(env)
    ctx.metrics.inc("polls_total")
    found = await ctx.dispatcher.poll(env, reclaim)
    return JSONResponse(work_json(*found) if found is not None else None)


async def _work_for_worker(request: Request, env_id: str, work_id: str) -> WorkItem:
    ctx = ctx_of(request)
    parse_prefixed(env_id, "env", "environment")
    parse_prefixed(work_id, "work", "work item")
    token = bearer(request)
    if not token:
        raise AuthenticationFailed("This route needs 'Authorization: Bearer <session_ingress_token>'.")
    claims = ctx.auth.worker(token)
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
    lease, at = await ctx.dispatcher.heartbeat(row)
    return JSONResponse({"lease_extended": True, "state": lease.state, "last_heartbeat": iso(at),
                         "ttl_seconds": int(ctx.config.lease_ttl_s)})


async def _own_environment(request: Request, env_id: str) -> tuple[Principal, EnvironmentRecord]:
    parse_prefixed(env_id, "env", "environment")
    principal = await user(request, write=True)
    return principal, await ctx_of(request).environments.own(principal, env_id)


@router.post("/v1/environments/{env_id}/work/{work_id}/stop")
async def stop(env_id: str, work_id: str, request: Request) -> Response:
    _, env = await _own_environment(request, env_id)
    parse_prefixed(work_id, "work", "work item")
    body = await read_object(request)
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise InvalidRequest("'force' must be a boolean.")
    await ctx_of(request).environments.stop_work(env, work_id, force)
    return JSONResponse({})


@router.delete("/v1/environments/bridge/{env_id}")
async def deregister(env_id: str, request: Request) -> Response:
    principal, env = await _own_environment(request, env_id)
    await ctx_of(request).environments.deregister(principal, env)
    return JSONResponse({})


@router.post("/v1/environments/{env_id}/bridge/reconnect")
async def reconnect(env_id: str, request: Request) -> Response:
    principal, env = await _own_environment(request, env_id)
    principal.require_policy()
    body = await read_object(request)
    raw = body.get("session_id")
    if not isinstance(raw, str):
        raise InvalidRequest("'session_id' is required.")
    await ctx_of(request).environments.reconnect(principal, env, parse_session_id(raw))
    return JSONResponse({})


@router.get("/v1/environments")
async def list_environments(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    show_all = request.query_params.get("all") in ("1", "true")
    t = now()
    envs = await ctx.environments.of_org(principal.org_id, show_all=show_all)
    data = [environment_json(env, active, ctx.config.poll_interval_s, t) for env, active in envs]
    return JSONResponse({"data": data, "has_more": False})
