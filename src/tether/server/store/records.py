"""Plain records the store hands out: rows become frozen dataclasses at the boundary."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import orjson
from websockets.frames import Frame, Opcode

from tether.protocol.ids import EnvironmentId, SessionId, WorkId
from tether.protocol.leases import LeaseState
from tether.protocol.permissions import PermissionStatus
from tether.protocol.session_status import SessionStatus
from tether.server import jsonio
from tether.server.clock import iso

__all__ = ["AuditEntry", "DeliveryState", "EnvironmentRecord", "EventIn", "FileRecord", "InternalEvent",
           "MemberRecord", "OrgRecord", "PermissionRecord", "SessionRecord", "SigningKey", "StoredEvent",
           "TokenRecord", "UserRecord", "WorkItem", "ws_text_frame"]


def ws_text_frame(payload: bytes) -> bytes:
    """A complete unmasked server-to-client WebSocket text frame (RFC 6455 §5.2)."""
    return Frame(Opcode.TEXT, payload).serialize(mask=False)


@dataclass(frozen=True)
class EventIn:
    """An event about to be appended to a session's log."""

    uuid: str
    source: str  # worker | client | server
    event_type: str
    payload: dict[str, Any]
    payload_json: str
    delivery: str | None = None  # "pending" for inbound events that the worker must process


@dataclass
class StoredEvent:
    """A committed event of a session's log (or a live ephemeral one, with ``ephemeral``)."""

    session_id: str
    seq: int
    event_id: str
    uuid: str
    source: str
    event_type: str
    payload_json: str
    created_at: float
    delivery: str | None = None
    ephemeral: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def payload(self) -> dict[str, Any]:
        try:
            value = orjson.loads(self.payload_json)
        except orjson.JSONDecodeError:  # a row no release of Tether stores (1,024+ levels deep)
            return {}
        return value if isinstance(value, dict) else {}

    @cached_property
    def client_frame(self) -> bytes:
        """The frame subscribers receive: the payload with ``sequence_num`` (computed once)."""
        body = dict(self.payload)
        body["sequence_num"] = self.seq
        if self.ephemeral:
            body["ephemeral"] = True
        return jsonio.dumps(body)  # a row stored before the depth limit is served clamped

    @cached_property
    def client_ws_frame(self) -> bytes:
        """``client_frame`` as a complete WebSocket text frame (built once for all subscribers)."""
        return ws_text_frame(self.client_frame)

    @cached_property
    def client_text(self) -> str:
        return self.client_frame.decode()

    @cached_property
    def worker_text(self) -> str:
        return self.payload_json + "\n"

    @cached_property
    def worker_sse_frame(self) -> bytes:
        """The v2 worker stream's ``client_event`` frame (docs/protocol.md §8.3), built once for
        every stream that sends it."""
        data = {"event_id": self.event_id, "sequence_num": self.seq, "event_type": self.event_type,
                "source": self.source, "payload": self.payload, "created_at": iso(self.created_at)}
        return b"event: client_event\nid: %d\ndata: %s\n\n" % (self.seq, jsonio.dumps(data))

    @cached_property
    def worker_frame(self) -> bytes:
        """The v1 worker frame: the payload as one newline-terminated JSON line."""
        return self.payload_json.encode() + b"\n"


# ---- rows of the other tables: frozen, slotted, one field per column in column order ----------------
# (store/tables.py; tests/server/store/test_records.py holds the two to that). Ids that cross APIs are
# typed (tether.protocol.ids); JSON columns hold plain JSON values.


@dataclass(frozen=True, slots=True)
class OrgRecord:
    id: str
    name: str
    allow_remote_control: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class UserRecord:
    id: str
    org_id: str
    email: str
    role: str
    password_hash: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A user with the name of its organisation (``tether admin users``)."""

    id: str
    email: str
    role: str
    org: str


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    kind: str  # access | refresh | personal | login_link | web_session | device_code
    secret_hash: str
    org_id: str | None
    user_id: str | None
    name: str | None
    expires_at: float | None
    revoked: bool
    created_at: float
    last_used_at: float | None
    extra: dict[str, Any] | None  # device codes: status, user_id, client_id; access/refresh: family
    lookup: str | None  # a device code's user code

    @property
    def family(self) -> str | None:
        family = (self.extra or {}).get("family")
        return family if isinstance(family, str) else None


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    secret: str
    active: bool
    created_at: float


@dataclass(frozen=True, slots=True)
class EnvironmentRecord:
    id: EnvironmentId
    org_id: str
    user_id: str | None
    machine_name: str
    directory: str
    branch: str | None
    git_repo_url: str | None
    max_sessions: int
    worker_type: str
    metadata: dict[str, Any] | None
    kind: str  # bridge | cloud
    secret_hash: str
    state: str  # active | deregistered | expired
    last_poll_at: float | None
    created_at: float


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: SessionId  # the ULID body; the API costumes it session_… or cse_…
    org_id: str
    user_id: str | None
    environment_id: EnvironmentId | None
    kind: str  # env | code
    title: str
    title_explicit: bool
    status: SessionStatus
    source: str | None
    permission_mode: str | None
    session_context: dict[str, Any] | None
    tags: list[str] | None
    worker_epoch: int
    worker_status: str | None
    worker_last_seen: float | None
    external_metadata: dict[str, Any] | None
    internal_metadata: dict[str, Any] | None
    last_seq: int
    created_at: float
    updated_at: float
    archived_at: float | None
    archive_reason: str | None
    successor_id: str | None
    worker_instance: str | None = None  # the server instance holding its v1 worker socket


@dataclass(frozen=True, slots=True)
class WorkItem:
    id: WorkId
    org_id: str
    environment_id: EnvironmentId
    session_id: SessionId
    kind: str  # session | healthcheck
    state: LeaseState
    secret: str
    token_jti: str | None
    created_at: float
    delivered_at: float | None
    acked_at: float | None
    last_heartbeat_at: float | None
    lease_expires_at: float | None


@dataclass(frozen=True, slots=True)
class PermissionRecord:
    pk: int
    session_id: SessionId
    request_id: str
    tool_name: str
    input: dict[str, Any] | None
    tool_use_id: str | None
    description: str | None
    permission_suggestions: Any
    status: PermissionStatus
    seq: int | None  # sequence_num of the control_request event
    request: str  # the original control_request JSON
    created_at: float
    answered_by: str | None
    answered_at: float | None
    decision: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class InternalEvent:
    """A row of a v2 worker's transcript (W7)."""

    pk: int  # 0 until stored
    session_id: SessionId
    event_id: str
    uuid: str
    event_type: str
    payload: str  # JSON text
    is_compaction: bool
    agent_id: str | None
    created_at: float


@dataclass(frozen=True, slots=True)
class FileRecord:
    id: str
    org_id: str
    user_id: str | None
    name: str
    content_type: str
    size: int
    content: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class AuditEntry:
    pk: int
    org_id: str
    actor: str
    action: str
    target: str | None
    detail: dict[str, Any] | None
    at: float


@dataclass(frozen=True, slots=True)
class DeliveryState:
    """An inbound event the worker has not processed yet (no payload)."""

    uuid: str
    seq: int
    delivery: str
