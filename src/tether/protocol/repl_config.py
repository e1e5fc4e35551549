"""Decisions of the REPL bridge before and while it runs (docs/protocol.md §12.1–§12.2, §12.3). Pure.

* :func:`parse_env_less_config`: the v2 tunables of ``GET /v1/bridge/config`` (``repl_v2_config``),
  each checked against its bounds; one bad value and the whole config falls back to the defaults
  (as the poll config does);
* :func:`check_gates`: the start gates in the reference's order (logged in → organisation policy →
  the dead-token backoff → an expired login → the version floor), each failure with the words a
  person reads in the footer;
* :func:`choose_core`: env-less v2 when the server turns ``repl_v2`` on (mirror mode always),
  env-based v1 otherwise and in perpetual mode;
* :class:`DeadToken`: a login whose bridge start failed three times is not tried again until the
  login changes (the record is kept across processes by the adapter);
* :func:`refresh_delay`: when the env-less core asks for a fresh worker token;
* :func:`repl_poll_backoff`: the v1 poll loop's retry budget (2 s → 60 s, 15 min, 120 s sleep gap);
* :func:`overslept`: a sleep that ran much longer than asked means the machine was suspended.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Final, Literal

from tether.protocol.backoff import Backoff
from tether.protocol.versions import version_ok

__all__ = [
    "DEAD_TOKEN_LIMIT",
    "DEFAULT_ENV_LESS_CONFIG",
    "MAX_ENV_RECREATIONS",
    "OVERSLEEP_S",
    "REFRESH_FLOOR_S",
    "CoreKind",
    "DeadToken",
    "EnvLessConfig",
    "Gate",
    "GateVerdict",
    "ParsedEnvLessConfig",
    "check_gates",
    "choose_core",
    "init_retry",
    "overslept",
    "parse_env_less_config",
    "refresh_delay",
    "repl_poll_backoff",
]

CoreKind = Literal["v1", "v2"]
MAX_ENV_RECREATIONS: Final = 3
"""Consecutive "environment lost" re-creations before the v1 core gives up (docs/protocol.md §12.2)."""
DEAD_TOKEN_LIMIT: Final = 3
REFRESH_FLOOR_S: Final = 30.0
OVERSLEEP_S: Final = 60.0


# ---- env-less tunables (docs/protocol.md §12.3) ---------------------------------------------------------

@dataclass(frozen=True)
class EnvLessConfig:
    init_retry_max_attempts: int = 3
    init_retry_base_delay_ms: int = 500
    init_retry_jitter_fraction: float = 0.25
    init_retry_max_delay_ms: int = 4000
    http_timeout_ms: int = 10_000
    uuid_dedup_buffer_size: int = 2000
    heartbeat_interval_ms: int = 20_000
    heartbeat_jitter_fraction: float = 0.1
    token_refresh_buffer_ms: int = 300_000
    teardown_archive_timeout_ms: int = 1500
    connect_timeout_ms: int = 15_000
    min_version: str = "0.0.0"
    should_show_app_upgrade_message: bool = False


DEFAULT_ENV_LESS_CONFIG: Final = EnvLessConfig()

# key → (minimum, maximum); None: unbounded on that side
_BOUNDS: Final[dict[str, tuple[float | None, float | None]]] = {
    "init_retry_max_attempts": (1, 10),
    "init_retry_base_delay_ms": (100, None),
    "init_retry_jitter_fraction": (0, 1),
    "init_retry_max_delay_ms": (500, None),
    "http_timeout_ms": (2000, None),
    "uuid_dedup_buffer_size": (100, 50_000),
    "heartbeat_interval_ms": (5000, 30_000),
    "heartbeat_jitter_fraction": (0, 0.5),
    "token_refresh_buffer_ms": (30_000, 1_800_000),
    "teardown_archive_timeout_ms": (500, 2000),
    "connect_timeout_ms": (5000, 60_000),
}
_FRACTIONS: Final = frozenset({"init_retry_jitter_fraction", "heartbeat_jitter_fraction"})


@dataclass(frozen=True)
class ParsedEnvLessConfig:
    config: EnvLessConfig
    problems: tuple[str, ...] = ()

    @property
    def fell_back(self) -> bool:
        return bool(self.problems)


def _number(value: object, fraction: bool) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    if not fraction and not float(value).is_integer():
        return None
    return float(value)


def parse_env_less_config(raw: object) -> ParsedEnvLessConfig:
    """Validate ``raw``; unknown keys are ignored, missing ones take their defaults."""
    if raw is None:
        return ParsedEnvLessConfig(DEFAULT_ENV_LESS_CONFIG)
    if not isinstance(raw, dict):
        return ParsedEnvLessConfig(DEFAULT_ENV_LESS_CONFIG, ("repl_v2_config is not an object",))
    values: dict[str, object] = {}
    problems: list[str] = []
    for f in fields(EnvLessConfig):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if f.name == "min_version":
            if isinstance(value, str) and value:
                values[f.name] = value
            else:
                problems.append("min_version is not a version string")
            continue
        if f.name == "should_show_app_upgrade_message":
            if isinstance(value, bool):
                values[f.name] = value
            else:
                problems.append("should_show_app_upgrade_message is not a boolean")
            continue
        fraction = f.name in _FRACTIONS
        number = _number(value, fraction)
        low, high = _BOUNDS[f.name]
        if number is None:
            problems.append(f"{f.name} is not a{' number' if fraction else 'n integer'}")
        elif (low is not None and number < low) or (high is not None and number > high):
            problems.append(f"{f.name} must be within [{low}, {high if high is not None else '∞'}]")
        else:
            values[f.name] = number if fraction else int(number)
    if problems:
        return ParsedEnvLessConfig(DEFAULT_ENV_LESS_CONFIG, tuple(problems))
    return ParsedEnvLessConfig(replace(DEFAULT_ENV_LESS_CONFIG, **values))  # type: ignore[arg-type]


def init_retry(cfg: EnvLessConfig) -> Backoff:
    """Retries of the env-less start calls (C1, C2): ``init_retry_max_attempts`` attempts in all,
    the base delay doubling (± jitter) up to the maximum."""
    base = cfg.init_retry_base_delay_ms / 1000.0
    cap = max(base, cfg.init_retry_max_delay_ms / 1000.0)
    jitter = min(cfg.init_retry_jitter_fraction, 0.99)
    return Backoff(base, cap, jitter, max_attempts=max(1, cfg.init_retry_max_attempts - 1))


def refresh_delay(expires_in: float, buffer_s: float, floor_s: float = REFRESH_FLOOR_S) -> float:
    """Seconds until the env-less core refreshes a worker token that lives ``expires_in`` seconds:
    ``buffer_s`` before it expires, never sooner than ``floor_s`` (a short-lived token never spins)."""
    return max(floor_s, expires_in - buffer_s)


# ---- gates (docs/protocol.md §12.1) ------------------------------------------------------------------------

@dataclass(frozen=True)
class DeadToken:
    """A login (identified by its expiry) whose bridge start failed ``fail_count`` times in a row."""

    expires_at: float | None
    fail_count: int = 0

    def blocks(self, current_expires_at: float | None, limit: int = DEAD_TOKEN_LIMIT) -> bool:
        return self.expires_at == current_expires_at and self.fail_count >= limit

    def after_failure(self, current_expires_at: float | None) -> DeadToken:
        if self.expires_at == current_expires_at:
            return DeadToken(current_expires_at, self.fail_count + 1)
        return DeadToken(current_expires_at, 1)


GateVerdict = Literal["ok", "failed", "skip"]


@dataclass(frozen=True)
class Gate:
    """``ok``; ``failed`` with the words for the footer; or ``skip``: do nothing, silently."""

    verdict: GateVerdict
    detail: str | None = None
    core: CoreKind | None = None

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


def choose_core(*, repl_v2: bool, perpetual: bool, mirror: bool) -> CoreKind:
    """docs/protocol.md §12.1 step 9 and §12.9: mirror mode uses the env-less core; otherwise v2 when the
    server turns it on and the bridge is not perpetual (perpetual needs an environment)."""
    if mirror:
        return "v2"
    return "v2" if repl_v2 and not perpetual else "v1"


def check_gates(*, logged_in: bool, policy_allows: bool, role: str | None, token_expired: bool,
                dead_token: DeadToken | None, token_expires_at: float | None, repl_v2: bool, perpetual: bool,
                mirror: bool, version: str, min_version: object, v2_min_version: object) -> Gate:
    """The start gates, in order; the first that fails decides."""
    if not logged_in:
        return Gate("failed", "not logged in · run `tether login`")
    if not policy_allows:
        return Gate("failed", "disabled by your organisation's policy")
    if role == "viewer":
        return Gate("failed", "viewers cannot share a session · ask an owner for the member role")
    if dead_token is not None and dead_token.blocks(token_expires_at):
        return Gate("skip", "this login failed repeatedly · run `tether login`")
    if token_expired:
        return Gate("failed", "your login has expired · run `tether login`")
    core = choose_core(repl_v2=repl_v2, perpetual=perpetual, mirror=mirror)
    floor = v2_min_version if core == "v2" else min_version
    if not version_ok(floor, version):
        return Gate("failed", f"the server needs tether {floor} or newer · upgrade tether")
    return Gate("ok", None, core)


# ---- v1 poll loop (docs/protocol.md §12.2) -------------------------------------------------------------------

def repl_poll_backoff(sleep_threshold: float = 120.0) -> Backoff:
    """Transient poll errors: 2 s doubling to 60 s (±25 %), give up after 15 minutes; a gap of more
    than ``sleep_threshold`` between errors means the machine slept: the budget starts over."""
    return Backoff(2.0, 60.0, 0.25, 15 * 60.0, sleep_threshold)


def overslept(asked: float, took: float, threshold: float = OVERSLEEP_S) -> bool:
    """A sleep of ``asked`` seconds that took ``took``: more than ``threshold`` late means the
    process was suspended (force one fast poll: the lease may have lapsed meanwhile)."""
    return took - asked > threshold
