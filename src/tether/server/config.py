"""One Config object for the server; CLI flags and TETHER_* environment variables map onto it."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from dataclasses import dataclass, field


def default_home() -> pathlib.Path:
    return pathlib.Path(os.environ.get("TETHER_HOME", pathlib.Path.home() / ".tether"))


@dataclass
class Limits:
    max_event_bytes: int = 1 << 20  # one event / frame
    max_body_bytes: int = 10 << 20  # one HTTP body
    max_v1_batch: int = 500
    max_v2_batch: int = 100
    max_file_bytes: int = 20 << 20
    # all request bodies being read or handled at once (429 + Retry-After past it); at least
    # one whole file upload must fit
    max_inflight_body_bytes: int = 64 << 20
    max_page_bytes: int = 4 << 20  # stored events in one page of a read (at least one event)
    # per credential; 0 disables
    rate_per_second: float = 500.0
    rate_burst: int = 2000
    login_per_minute: int = 10
    device_poll_interval_s: int = 5


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 8787
    data_dir: pathlib.Path = field(default_factory=lambda: default_home() / "server")
    database_url: str | None = None
    # scale-out (docs/protocol.md §4.4): the bus between server instances. None: one instance,
    # in-process fan-out. With it, each instance follows the stream ``<redis_prefix>:bus``; while
    # Redis is unreachable every stream re-reads the database each ``bus_poll_s`` instead.
    redis_url: str | None = None
    redis_prefix: str = "tether"
    bus_poll_s: float = 1.0
    public_url: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    # Reverse proxies whose X-Forwarded-For/-Proto are believed (comma-separated addresses or
    # networks). None: with --public-url a proxy on loopback, else no one — a client reaching
    # the server through loopback (an ssh -R tunnel) must not pick its own address.
    trusted_proxy: str | None = None
    # connections: headers must arrive within header_timeout_s; an idle keep-alive connection
    # closes after keep_alive_s; past max_connections new requests get 503 (sockets count too)
    header_timeout_s: float = 10.0
    keep_alive_s: int = 5
    max_connections: int = 4096
    # timings (seconds)
    poll_timeout_s: float = 8.0
    poll_interval_s: float = 2.0
    reclaim_older_than_ms: int = 5000
    lease_ttl_s: float = 300.0
    lease_check_interval_s: float = 5.0
    environment_ttl_s: float = 4 * 3600.0
    worker_token_ttl_s: float = 4 * 3600.0
    # a re-dispatched session's old worker token still writes until the new item is acked and
    # this long after (writes in flight while its bridge swaps tokens)
    worker_handover_s: float = 30.0
    worker_heartbeat_ttl_s: float = 60.0
    # every instance re-reads the signing keys this often (at once on a bus notice, with --redis-url)
    key_refresh_s: float = 30.0
    # each instance beats its row in server_instances this often; one silent for 3 beats is gone and its
    # v1 workers are marked disconnected by the others (tether.protocol.instances)
    instance_heartbeat_s: float = 10.0
    access_token_ttl_s: float = 3600.0
    refresh_token_ttl_s: float = 30 * 24 * 3600.0
    login_link_ttl_s: float = 24 * 3600.0
    shared_login_link_ttl_s: float = 600.0  # a link minted by a running client (a QR for a phone)
    device_code_ttl_s: float = 600.0
    web_session_ttl_s: float = 14 * 24 * 3600.0
    initialize_timeout_s: float = 14.0  # a v1 worker socket that leaves `initialize` unanswered is closed 1008
    # delivery moves a stream causes (an event sent: received) reach subscribers at once and the
    # store in one write per this interval (a crash re-sends those events; workers dedup by uuid)
    delivery_flush_s: float = 0.05
    sse_keepalive_s: float = 15.0
    worker_transport: str = "v2"  # what env-based dispatch hands out: v2 (default) | v1
    broker_queue_size: int = 4096  # items a subscriber may lag behind before it re-reads the log
    # the loop-stall monitor (server/loopwatch.py): wake-up interval, 0 = off; stalls longer than
    # the threshold are logged, counted in /metrics and written to <data_dir>/loop-stalls.jsonl
    loop_monitor_s: float = 0.0
    loop_stall_threshold_s: float = 0.1
    limits: Limits = field(default_factory=Limits)
    print_login_link: bool = True

    @property
    def url(self) -> str:
        """The server's own URL as clients should use it."""
        if self.public_url:
            return self.public_url.rstrip("/")
        scheme = "https" if self.tls_cert else "http"
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.port}"

    @property
    def forwarded_allow_ips(self) -> str | None:
        """Whose forwarded headers count (uvicorn's ``forwarded_allow_ips``); None: nobody's."""
        if self.trusted_proxy:
            return ",".join(part.strip() for part in self.trusted_proxy.split(",") if part.strip())
        return "127.0.0.1,::1" if self.public_url else None

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'tether.db'}"

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


_ENV_FIELDS = {
    "TETHER_HOST": ("host", str),
    "TETHER_PORT": ("port", int),
    "TETHER_DATA_DIR": ("data_dir", pathlib.Path),
    "TETHER_DATABASE_URL": ("database_url", str),
    "TETHER_REDIS_URL": ("redis_url", str),
    "TETHER_REDIS_PREFIX": ("redis_prefix", str),
    "TETHER_PUBLIC_URL": ("public_url", str),
    "TETHER_TRUSTED_PROXY": ("trusted_proxy", str),
    "TETHER_LEASE_TTL": ("lease_ttl_s", float),
    "TETHER_WORKER_TRANSPORT": ("worker_transport", str),
}


def config_from_env(base: Config | None = None) -> Config:
    """Apply TETHER_* variables; TETHER_CONFIG_JSON may set any field (tests use short TTLs)."""
    cfg = base or Config()
    for name, (attr, conv) in _ENV_FIELDS.items():
        if name in os.environ:
            setattr(cfg, attr, conv(os.environ[name]))
    raw = os.environ.get("TETHER_CONFIG_JSON")
    if raw:
        apply_overrides(cfg, json.loads(raw))
    return cfg


def apply_overrides(cfg: Config, values: dict[str, object]) -> None:
    known = {f.name for f in dataclasses.fields(Config)}
    for key, value in values.items():
        if key == "limits" and isinstance(value, dict):
            for lkey, lvalue in value.items():
                if not hasattr(cfg.limits, lkey):
                    raise ValueError(f"unknown limit {lkey!r}")
                setattr(cfg.limits, lkey, lvalue)
        elif key in known:
            setattr(cfg, key, pathlib.Path(str(value)) if key == "data_dir" else value)
        else:
            raise ValueError(f"unknown config field {key!r}")
