"""Tether additions (docs/protocol.md §3): me, bridge config, tokens, audit, files, operations."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.requests import ClientDisconnect
from starlette.types import Message

from tether import __version__
from tether.errors import InvalidRequest, PayloadTooLarge, TetherError
from tether.server.api.common import (
    JSONResponse,
    bearer,
    ctx_of,
    declared_length,
    query_int,
    rate_limit,
    read_object,
    user,
)
from tether.server.auth.secrets import kind_of
from tether.server.clock import iso
from tether.server.store.records import TokenRecord

router = APIRouter()


@router.get("/v1/me")
async def me(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    org = await ctx.accounts.org(principal.org_id)
    return JSONResponse({
        "user": {"id": principal.user_id, "email": principal.email, "role": principal.role},
        "organization": {"uuid": principal.org_id, "name": org.name},
        "organization_uuid": principal.org_id,
        "role": principal.role,
        "policy": {"allow_remote_control": org.allow_remote_control},
        "credential": principal.kind,
    })


@router.put("/v1/org/policy")
async def set_policy(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_owner()
    body = await read_object(request, allow_empty=False)
    allow = body.get("allow_remote_control")
    if not isinstance(allow, bool):
        raise InvalidRequest("'allow_remote_control' must be a boolean.")
    await ctx.accounts.set_policy(principal, allow)
    return JSONResponse({"allow_remote_control": allow})


@router.get("/v1/bridge/config")
async def bridge_config(request: Request) -> Response:
    ctx = ctx_of(request)
    await user(request)
    interval = int(ctx.config.poll_interval_s * 1000)
    return JSONResponse({
        "poll_config": {
            "poll_interval_ms_not_at_capacity": interval,
            "poll_interval_ms_at_capacity": 600_000,
            # well inside the lease, whatever TTL the server runs with
            "non_exclusive_heartbeat_interval_ms": int(min(60.0, ctx.config.lease_ttl_s / 3) * 1000),
            "multisession_poll_interval_ms_not_at_capacity": interval,
            "multisession_poll_interval_ms_partial_capacity": interval,
            "multisession_poll_interval_ms_at_capacity": 600_000,
            "reclaim_older_than_ms": ctx.config.reclaim_older_than_ms,
            "session_keepalive_interval_v2_ms": 120_000,
        },
        "repl_v2": ctx.config.worker_transport == "v2",
        "repl_v2_config": {
            "heartbeat_interval_ms": 20_000,
            "heartbeat_jitter_fraction": 0.1,
            "token_refresh_buffer_ms": 300_000,
            "uuid_dedup_buffer_size": 2000,
        },
        "worker_transport": ctx.config.worker_transport,
        "min_version": "0.1.0",
        "v2_min_version": "0.1.0",
        "initial_history_cap": 200,
        "multi_session": True,
        "lease_ttl_seconds": int(ctx.config.lease_ttl_s),
        "server_version": __version__,
    })


def _token_json(row: TokenRecord) -> dict[str, object]:
    return {"id": row.id, "name": row.name, "kind": row.kind, "created_at": iso(row.created_at),
            "expires_at": iso(row.expires_at), "last_used_at": iso(row.last_used_at), "revoked": row.revoked}


@router.get("/v1/tokens")
async def list_tokens(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    return JSONResponse({"data": [_token_json(r) for r in await ctx.accounts.tokens(principal.user_id)]})


@router.post("/v1/tokens")
async def create_token(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    body = await read_object(request)
    name = body.get("name", "token")
    if not isinstance(name, str) or not 1 <= len(name) <= 100:
        raise InvalidRequest("'name' must be a string of 1 to 100 characters.")
    days = body.get("expires_in_days")
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650):
        raise InvalidRequest("'expires_in_days' must be an integer from 1 to 3650.")
    issued = await ctx.accounts.create_token(principal, name, days * 86400 if days else None)
    return JSONResponse({**_token_json(issued.row), "token": issued.secret})


@router.delete("/v1/tokens/{token_id}")
async def revoke_token(token_id: str, request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    await ctx.accounts.revoke_token(principal, token_id)
    return JSONResponse({})


@router.get("/v1/audit")
async def audit(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request)
    principal.require_owner()
    limit = query_int(request, "limit", 100, lo=1, hi=1000) or 100
    before = query_int(request, "before", None, lo=1, hi=2**62)
    rows = await ctx.accounts.audit(principal, limit + 1, before)
    data = [{"id": r.pk, "actor": r.actor, "action": r.action, "target": r.target, "detail": r.detail,
             "at": iso(r.at)} for r in rows[:limit]]
    return JSONResponse({"data": data, "has_more": len(rows) > limit,
                         "next_before": data[-1]["id"] if len(rows) > limit else None})


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._ -]+")
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
# type/subtype with optional parameters (RFC 9110 §8.3): nothing a response header could not carry
_CONTENT_TYPE = re.compile(rf'{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|"[^"\\\x00-\x1f\x7f]*"))*')
DEFAULT_CONTENT_TYPE = "application/octet-stream"


def safe_content_type(value: str | None) -> str:
    """An uploaded part's declared type if it is a well-formed media type, else octet-stream: a
    control character in it made the file undownloadable (a header cannot carry it)."""
    if value and len(value) <= 200 and _CONTENT_TYPE.fullmatch(value):
        return value
    return DEFAULT_CONTENT_TYPE


@router.post("/v1/files")
async def upload(request: Request) -> Response:
    ctx = ctx_of(request)
    principal = await user(request, write=True)
    principal.require_writer()
    limit = ctx.config.limits.max_file_bytes
    declared = declared_length(request)
    if declared is not None and declared > limit + 65536:
        raise PayloadTooLarge(f"Files are limited to {limit} bytes.")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("Upload files as multipart/form-data with a 'file' field.")
    try:
        form = await _limited(request, limit + 65536).form(max_files=1, max_fields=10, max_part_size=limit)
    except (TetherError, ClientDisconnect):  # too large, the body budget, the client went away
        raise
    except Exception as exc:  # starlette raises its own error types for malformed multipart
        raise InvalidRequest(f"Malformed multipart body: {exc}") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise InvalidRequest("Multipart field 'file' is required.")
    content = await upload.read()
    if len(content) > limit:
        raise PayloadTooLarge(f"Files are limited to {limit} bytes.")
    name = _SAFE_NAME.sub("_", upload.filename or "file")[:200] or "file"
    file_uuid = await ctx.files.upload(principal, name, safe_content_type(upload.content_type), content)
    return JSONResponse({"file_uuid": file_uuid, "file_name": name, "size": len(content)})


def _limited(request: Request, cap: int) -> Request:
    """The same request, whose body read fails with 413 past ``cap`` bytes (chunked uploads
    carry no Content-Length, and multipart parsing would otherwise spool any size to disk)."""
    seen = 0

    async def receive() -> Message:
        nonlocal seen
        message = await request.receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > cap:
                raise PayloadTooLarge(f"Files are limited to {cap - 65536} bytes.")
        return message

    return Request(request.scope, receive)


@router.get("/api/oauth/files/{file_uuid}/content")
async def download(file_uuid: str, request: Request) -> Response:
    """A user of the file's org, or the worker of a session whose prompts attached it (the
    session host downloads attachments with the token it holds, docs/protocol.md §7.6)."""
    ctx = ctx_of(request)
    token = bearer(request)
    if token is not None and (kind_of(token) == "jwt" or token.startswith("sk-ant-si-")):
        claims = ctx.auth.worker(token)
        rate_limit(ctx, f"worker:{claims.session_body}")
        row = await ctx.files.for_worker(claims, file_uuid)
    else:
        row = await ctx.files.for_user(await user(request), file_uuid)
    # (sanitised again: rows stored before uploads were checked may hold anything)
    return Response(row.content, media_type=safe_content_type(row.content_type),
                    headers={"content-disposition": f'attachment; filename="{row.name}"',
                             "x-content-type-options": "nosniff"})


@router.get("/healthz")
async def healthz() -> Response:
    return JSONResponse({"status": "ok", "version": __version__})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    ctx = ctx_of(request)
    if not ctx.ready or ctx.closing:
        return JSONResponse({"status": "starting" if not ctx.closing else "closing"}, status_code=503)
    await ctx.store.ping()
    return JSONResponse({"status": "ready"})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    ctx = ctx_of(request)
    budget = ctx.body_budget
    ctx.metrics.gauge("body_bytes_in_flight", budget.used)
    ctx.metrics.gauge("body_bytes_in_flight_peak", budget.peak)
    ctx.metrics.gauge("body_budget_refusals", budget.refused)
    return PlainTextResponse(ctx.metrics.render(), media_type="text/plain; version=0.0.4")
