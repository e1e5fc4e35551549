"""SQLAlchemy Core tables: one schema for SQLite and PostgreSQL (docs/architecture.md "Data model").

Times are float seconds since the epoch (UTC); JSON columns hold plain JSON values.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

orgs = sa.Table(
    "orgs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False, unique=True),
    sa.Column("allow_remote_control", sa.Boolean, nullable=False, default=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("orgs.id"), nullable=False, index=True),
    sa.Column("email", sa.String(320), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("password_hash", sa.String(300), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

tokens = sa.Table(
    "tokens",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("org_id", sa.String(64), nullable=True, index=True),
    sa.Column("user_id", sa.String(64), nullable=True, index=True),
    sa.Column("name", sa.String(200), nullable=True),
    sa.Column("expires_at", sa.Float, nullable=True),
    sa.Column("revoked", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("last_used_at", sa.Float, nullable=True),
    # device codes: user_code, status, approved; refresh tokens: family
    sa.Column("extra", sa.JSON, nullable=True),
    sa.Column("lookup", sa.String(64), nullable=True, index=True),
)

signing_keys = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(64), primary_key=True),
    sa.Column("secret", sa.String(200), nullable=False),
    sa.Column("active", sa.Boolean, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

environments = sa.Table(
    "environments",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("orgs.id"), nullable=False, index=True),
    sa.Column("user_id", sa.String(64), nullable=True),
    sa.Column("machine_name", sa.String(300), nullable=False, default=""),
    sa.Column("directory", sa.Text, nullable=False, default=""),
    sa.Column("branch", sa.String(300), nullable=True),
    sa.Column("git_repo_url", sa.Text, nullable=True),
    sa.Column("max_sessions", sa.Integer, nullable=False, default=1),
    sa.Column("worker_type", sa.String(64), nullable=False, default="claude_code"),
    sa.Column("metadata", sa.JSON, nullable=True),
    sa.Column("kind", sa.String(16), nullable=False, default="bridge"),
    sa.Column("secret_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("state", sa.String(16), nullable=False, default="active"),
    sa.Column("last_poll_at", sa.Float, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    # the ULID body; the API costumes it as session_<id> or cse_<id>
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("orgs.id"), nullable=False, index=True),
    sa.Column("user_id", sa.String(64), nullable=True),
    sa.Column("environment_id", sa.String(64), nullable=True, index=True),
    sa.Column("kind", sa.String(16), nullable=False, default="env"),  # env | code
    sa.Column("title", sa.Text, nullable=False, default=""),
    sa.Column("title_explicit", sa.Boolean, nullable=False, default=False),
    sa.Column("status", sa.String(24), nullable=False, default="idle"),
    sa.Column("source", sa.String(64), nullable=True),
    sa.Column("permission_mode", sa.String(32), nullable=True),
    sa.Column("session_context", sa.JSON, nullable=True),
    sa.Column("tags", sa.JSON, nullable=True),
    sa.Column("worker_epoch", sa.Integer, nullable=False, default=0),
    sa.Column("worker_status", sa.String(24), nullable=True),
    sa.Column("worker_last_seen", sa.Float, nullable=True),
    sa.Column("external_metadata", sa.JSON, nullable=True),
    sa.Column("internal_metadata", sa.JSON, nullable=True),
    sa.Column("last_seq", sa.Integer, nullable=False, default=0),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("archived_at", sa.Float, nullable=True),
    # why it was archived (tether.protocol.archive) and the session that continues it (0003)
    sa.Column("archive_reason", sa.String(32), nullable=True),
    sa.Column("successor_id", sa.String(32), nullable=True),
    # the server instance holding the session's v1 worker socket (server_instances.id; 0004)
    sa.Column("worker_instance", sa.String(64), nullable=True),
)
# the v1 workers marked connected, by instance: what a heartbeat looks through for gone instances
sa.Index("ix_sessions_connected_workers", sessions.c.worker_instance,
         sqlite_where=sessions.c.worker_status == "connected",
         postgresql_where=sessions.c.worker_status == "connected")

# one row per server instance (its id lives in its data directory), beaten every instance_heartbeat_s
server_instances = sa.Table(
    "server_instances",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False),
)

work_items = sa.Table(
    "work_items",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org_id", sa.String(64), nullable=False),
    sa.Column("environment_id", sa.String(64), nullable=False, index=True),
    sa.Column("session_id", sa.String(32), nullable=False, index=True),
    sa.Column("kind", sa.String(16), nullable=False, default="session"),
    # queued | delivered | acked | stopped | superseded
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("secret", sa.Text, nullable=False),
    sa.Column("token_jti", sa.String(64), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("delivered_at", sa.Float, nullable=True),
    sa.Column("acked_at", sa.Float, nullable=True),
    sa.Column("last_heartbeat_at", sa.Float, nullable=True),
    sa.Column("lease_expires_at", sa.Float, nullable=True),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(32), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("uuid", sa.String(64), nullable=False),
    sa.Column("source", sa.String(16), nullable=False),  # worker | client | server
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # JSON text as received (orjson)
    # for inbound events (to the worker): pending | received | processing | processed
    sa.Column("delivery", sa.String(16), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("session_id", "seq", name="uq_events_session_seq"),
    sa.UniqueConstraint("session_id", "uuid", name="uq_events_session_uuid"),
)
# only inbound events the worker has not processed (migration 0002): worker events, the bulk
# of the log, write no page of it. A literal, not a bound parameter: a query uses a partial
# index only when its WHERE repeats the index's terms.
UNDELIVERED = sa.and_(events.c.delivery.is_not(None), events.c.delivery != sa.literal_column("'processed'"))
sa.Index("ix_events_undelivered", events.c.session_id, events.c.seq, sqlite_where=UNDELIVERED,
         postgresql_where=UNDELIVERED)

internal_events = sa.Table(
    "internal_events",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(32), nullable=False, index=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("uuid", sa.String(64), nullable=False),
    sa.Column("event_type", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("is_compaction", sa.Boolean, nullable=False, default=False),
    sa.Column("agent_id", sa.String(128), nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("session_id", "uuid", name="uq_internal_events_session_uuid"),
)

permission_requests = sa.Table(
    "permission_requests",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("session_id", sa.String(32), nullable=False, index=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("tool_name", sa.String(200), nullable=False),
    sa.Column("input", sa.JSON, nullable=True),
    sa.Column("tool_use_id", sa.String(128), nullable=True),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("permission_suggestions", sa.JSON, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending allowed denied cancelled expired
    sa.Column("seq", sa.Integer, nullable=True),  # sequence_num of the control_request event
    sa.Column("request", sa.Text, nullable=False),  # the original control_request JSON
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("answered_by", sa.String(64), nullable=True),
    sa.Column("answered_at", sa.Float, nullable=True),
    sa.Column("decision", sa.JSON, nullable=True),
    sa.UniqueConstraint("session_id", "request_id", name="uq_permission_session_request"),
)

files = sa.Table(
    "files",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("org_id", sa.String(64), nullable=False, index=True),
    sa.Column("user_id", sa.String(64), nullable=True),
    sa.Column("name", sa.String(300), nullable=False),
    sa.Column("content_type", sa.String(200), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("content", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

audit = sa.Table(
    "audit",
    metadata,
    sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("org_id", sa.String(64), nullable=False, index=True),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(128), nullable=True),
    sa.Column("detail", sa.JSON, nullable=True),
    sa.Column("at", sa.Float, nullable=False),
)
