"""Poll configuration of the standalone bridge (docs/protocol.md §11.5; served by ``GET /v1/bridge/config``).

:func:`parse_poll_config` validates what the server sent. Missing keys take their defaults
and unknown keys are ignored (forward compatibility), but one invalid value, or a config
without any at-capacity liveness mechanism (heartbeat interval > 0 or at-capacity poll > 0),
makes the *whole* config fall back to the defaults, as the reference does.

:func:`poll_interval_ms` picks the interval for the loop's capacity state.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final, Literal

__all__ = [
    "DEFAULT_POLL_CONFIG",
    "CapacityState",
    "ParsedPollConfig",
    "PollConfig",
    "capacity_state",
    "parse_poll_config",
    "poll_interval_ms",
]

CapacityState = Literal["idle", "partial", "full"]


@dataclass(frozen=True)
class PollConfig:
    poll_interval_ms_not_at_capacity: int = 2000
    poll_interval_ms_at_capacity: int = 600_000
    non_exclusive_heartbeat_interval_ms: int = 0
    multisession_poll_interval_ms_not_at_capacity: int = 2000
    multisession_poll_interval_ms_partial_capacity: int = 2000
    multisession_poll_interval_ms_at_capacity: int = 600_000
    reclaim_older_than_ms: int = 5000
    session_keepalive_interval_v2_ms: int = 120_000


DEFAULT_POLL_CONFIG: Final = PollConfig()

# key → (minimum, zero allowed as "off")
_RULES: Final[dict[str, tuple[int, bool]]] = {
    "poll_interval_ms_not_at_capacity": (100, False),
    "poll_interval_ms_at_capacity": (100, True),
    "non_exclusive_heartbeat_interval_ms": (0, True),
    "multisession_poll_interval_ms_not_at_capacity": (100, False),
    "multisession_poll_interval_ms_partial_capacity": (100, False),
    "multisession_poll_interval_ms_at_capacity": (100, True),
    "reclaim_older_than_ms": (1, False),
    "session_keepalive_interval_v2_ms": (0, True),
}
_MAX_MS: Final = 24 * 3600 * 1000


@dataclass(frozen=True)
class ParsedPollConfig:
    config: PollConfig
    problems: tuple[str, ...] = ()
    """Why the server's config was rejected (empty when it was used)."""

    @property
    def fell_back(self) -> bool:
        return bool(self.problems)


def _as_ms(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def parse_poll_config(raw: object) -> ParsedPollConfig:
    """Validate ``raw`` (the ``poll_config`` object); on any problem return the defaults."""
    if raw is None:
        return ParsedPollConfig(DEFAULT_POLL_CONFIG)
    if not isinstance(raw, dict):
        return ParsedPollConfig(DEFAULT_POLL_CONFIG, ("poll_config is not an object",))
    values: dict[str, int] = {}
    problems: list[str] = []
    for f in fields(PollConfig):
        if f.name not in raw:
            continue
        ms = _as_ms(raw[f.name])
        minimum, zero_ok = _RULES[f.name]
        if ms is None:
            problems.append(f"{f.name} is not an integer")
        elif ms > _MAX_MS:
            problems.append(f"{f.name} is larger than 24 h")
        elif not (ms >= minimum or (zero_ok and ms == 0)):
            problems.append(f"{f.name} must be {'0 or ' if zero_ok and minimum else ''}≥ {minimum}")
        else:
            values[f.name] = ms
    if problems:
        return ParsedPollConfig(DEFAULT_POLL_CONFIG, tuple(problems))
    config = PollConfig(**values)
    if config.non_exclusive_heartbeat_interval_ms <= 0 and (
        config.poll_interval_ms_at_capacity <= 0 or config.multisession_poll_interval_ms_at_capacity <= 0
    ):
        return ParsedPollConfig(DEFAULT_POLL_CONFIG,
                                ("no at-capacity liveness: heartbeat and at-capacity poll are both off",))
    return ParsedPollConfig(config)


def capacity_state(active: int, max_sessions: int) -> CapacityState:
    if active <= 0:
        return "idle"
    return "full" if active >= max_sessions else "partial"


def poll_interval_ms(config: PollConfig, state: CapacityState, *, multi_session: bool) -> int:
    """The sleep after an empty poll. At capacity, 0 means "don't poll; heartbeat only"."""
    if not multi_session:
        return config.poll_interval_ms_at_capacity if state == "full" else config.poll_interval_ms_not_at_capacity
    if state == "full":
        return config.multisession_poll_interval_ms_at_capacity
    if state == "partial":
        return config.multisession_poll_interval_ms_partial_capacity
    return config.multisession_poll_interval_ms_not_at_capacity
