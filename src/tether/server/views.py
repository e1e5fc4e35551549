"""The JSON shapes of the server's records, in one place: what routers answer (docs/protocol.md
§3), what the work poll hands out (§4.1) and the ``session_update`` frame (§8.4). Plain functions
of a record and the clock; the rules they show come from ``tether.protocol``."""

from __future__ import annotations

from typing import Any

import orjson

from tether.protocol.leases import environment_online
from tether.protocol.session_status import worker_connected
from tether.server.clock import iso
from tether.server.hub import Live
from tether.server.store.records import (
    EnvironmentRecord,
    PermissionRecord,
    SessionRecord,
    UserRecord,
    WorkItem,
)

__all__ = ["environment_json", "is_online", "member_json", "permission_json", "session_json", "session_update_frame",
           "work_json", "worker_json"]


def is_online(env: EnvironmentRecord, poll_interval_s: float, at: float) -> bool:
    """Registered and polled (or heartbeating) lately."""
    return env.state == "active" and environment_online(env.last_poll_at, at, poll_interval_s)


def worker_json(session: SessionRecord, at: float, heartbeat_ttl_s: float) -> dict[str, Any]:
    """A session's worker health: S2 ``worker`` and ``session_update.worker``."""
    return {
        "connected": worker_connected(session.worker_status, session.worker_last_seen, at, heartbeat_ttl_s),
        "status": session.worker_status,
        "epoch": session.worker_epoch,
    }


def session_json(session: SessionRecord, *, at: float, heartbeat_ttl_s: float, online: bool | None = None,
                 prefix: str = "session_") -> dict[str, Any]:
    return {
        "type": "session",
        "id": f"{prefix}{session.id}",
        "title": session.title,
        "session_status": session.status,
        "environment_id": session.environment_id,
        "created_at": iso(session.created_at),
        "updated_at": iso(session.updated_at),
        "session_context": session.session_context or {},
        "source": session.source,
        "permission_mode": session.permission_mode,
        "tags": session.tags or [],
        "last_sequence_num": session.last_seq,
        "archived_at": iso(session.archived_at),
        "archive_reason": session.archive_reason,
        "successor_session_id": f"{prefix}{successor}" if (successor := session.successor_id) else None,
        "worker": {**worker_json(session, at, heartbeat_ttl_s), "last_seen": iso(session.worker_last_seen)},
        "environment": {"online": online},
    }


def session_update_frame(session: SessionRecord, at: float, heartbeat_ttl_s: float) -> Live:
    """Status, title and worker health (docs/protocol.md §8.4): a frame equal to the last one sent
    for the session is not sent again (``Hub.publish_frames``), so a worker connecting or leaving
    must show in it."""
    return Live(orjson.dumps({
        "type": "session_update",
        "session_id": f"session_{session.id}",
        "status": session.status,
        "title": session.title,
        "sequence_num": session.last_seq,
        "worker": worker_json(session, at, heartbeat_ttl_s),
        **({"archive_reason": session.archive_reason} if session.archived_at else {}),
    }))


def environment_json(env: EnvironmentRecord, active: int, poll_interval_s: float, at: float) -> dict[str, Any]:
    return {
        "id": env.id,
        "kind": env.kind,
        "machine_name": env.machine_name,
        "directory": env.directory,
        "branch": env.branch,
        "git_repo_url": env.git_repo_url,
        "max_sessions": env.max_sessions,
        "worker_type": env.worker_type,
        "state": env.state,
        "online": is_online(env, poll_interval_s, at),
        "active_sessions": active,
        "last_poll_at": iso(env.last_poll_at),
        "created_at": iso(env.created_at),
    }


def permission_json(row: PermissionRecord) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "session_id": f"session_{row.session_id}",
        "tool_name": row.tool_name,
        "input": row.input,
        "tool_use_id": row.tool_use_id,
        "description": row.description,
        "permission_suggestions": row.permission_suggestions,
        "status": row.status,
        "sequence_num": row.seq,
        "created_at": iso(row.created_at),
        "answered_by": row.answered_by,
        "answered_at": iso(row.answered_at),
        "decision": row.decision,
    }


def work_json(row: WorkItem, v2: bool) -> dict[str, Any]:
    body = row.session_id
    return {
        "id": row.id,
        "type": "work",
        "environment_id": row.environment_id,
        "state": row.state,
        "data": {"type": row.kind, "id": f"cse_{body}" if v2 else f"session_{body}"},
        "secret": row.secret,
        "created_at": iso(row.created_at),
    }


def member_json(row: UserRecord, me: str) -> dict[str, Any]:
    """A member of an organisation as the web client's settings page shows it (``you``: the caller)."""
    return {"id": row.id, "email": row.email, "role": row.role, "created_at": iso(row.created_at),
            "has_password": bool(row.password_hash), "you": row.id == me}
