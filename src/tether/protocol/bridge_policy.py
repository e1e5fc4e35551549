"""Decisions of the standalone bridge (``tether remote-control``; docs/protocol.md §11.1–§11.8). Pure.

Everything here is a plain function or class fed with ``now`` (and a random source where
jitter is involved); the bridge's adapters (:mod:`tether.bridge.loop` and the parts it composes)
own the sockets, processes and timers and ask these for each decision (what to do with a polled
work item is :func:`tether.protocol.work_intake.classify_work`):

* :func:`resolve_spawn_mode`, :func:`max_sessions_for`: spawn-mode precedence and capacity;
* :func:`plan_next_poll`: how long to wait before the next work poll (idle / partial /
  at capacity; at capacity with a 0 interval it waits for a capacity wake only, never polls);
* :func:`heartbeat_interval_s`: how often active work is heartbeated (E5);
* :class:`PollBackoff`: the two retry tracks (connection 2 s → 120 s, other 500 ms → 30 s,
  ±25 %, 10-minute give-up) with sleep detection across both;
* :func:`jwt_expiry`, :class:`RefreshSchedule`: when to ask for a fresh worker token
  (5 minutes before ``exp``, with a floor so a short-lived token never spins);
* :func:`session_deadline`: the per-session watchdog;
* :func:`stop_work_retry`: ``stopWork`` retries (3 attempts, 1 s / 2 s, ±25 %);
* :func:`plan_teardown`: the fixed shutdown order.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

from tether.protocol.backoff import Backoff, BackoffDecision, RandomSource, bridge_connection, bridge_general
from tether.protocol.ids import id_body
from tether.protocol.poll_config import CapacityState, PollConfig, capacity_state, poll_interval_ms

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_HEARTBEAT_S",
    "DEFAULT_SESSION_TIMEOUT_S",
    "REFRESH_BUFFER_S",
    "REFRESH_FOLLOW_UP_S",
    "REFRESH_MIN_GAP_S",
    "REFRESH_RETRY_S",
    "SHUTDOWN_GRACE_S",
    "SLEEP_DETECTION_S",
    "SPAWN_MODES",
    "TEARDOWN_ORDER",
    "TOKEN_EXPIRY_GRACE_S",
    "ActiveWork",
    "ErrorKind",
    "PollBackoff",
    "PollPlan",
    "RefreshSchedule",
    "SpawnMode",
    "TeardownAction",
    "TeardownStep",
    "heartbeat_interval_s",
    "jwt_expiry",
    "max_sessions_for",
    "plan_next_poll",
    "plan_teardown",
    "resolve_spawn_mode",
    "session_deadline",
    "stop_work_retry",
]

SpawnMode = Literal["session", "same-dir", "worktree"]
SPAWN_MODES: Final[tuple[SpawnMode, ...]] = ("session", "same-dir", "worktree")
DEFAULT_CAPACITY: Final = 32
DEFAULT_SESSION_TIMEOUT_S: Final = 24 * 3600.0
SHUTDOWN_GRACE_S: Final = 30.0
"""SIGTERM → SIGKILL grace for agents at shutdown (docs/protocol.md §11.4)."""

REFRESH_BUFFER_S: Final = 300.0
"""Ask for a fresh worker token this long before the current one expires (docs/protocol.md §9.3)."""
REFRESH_FOLLOW_UP_S: Final = 30 * 60.0
"""After a refresh request, try again this much later if no fresh token arrived by then."""
REFRESH_RETRY_S: Final = 60.0
"""A refresh request that failed is retried after this long."""
REFRESH_MIN_GAP_S: Final = 30.0
"""Never ask twice for the same session within this long (``scheduleFromExpiresIn`` floor)."""

DEFAULT_HEARTBEAT_S: Final = 60.0
SLEEP_DETECTION_S: Final = 240.0
"""A gap since the last poll error longer than 2 × the connection cap: the machine slept."""

ErrorKind = Literal["connection", "general"]
K = TypeVar("K", bound=Hashable)


# ---- spawn mode and capacity ------------------------------------------------------------------

def resolve_spawn_mode(*, resuming: bool, explicit: SpawnMode | None, saved: SpawnMode | None,
                       multi_session: bool) -> SpawnMode:
    """docs/protocol.md §11.1 step 7: resume → single session; then the flag; then the saved
    preference; then ``same-dir`` (``session`` when the server does not allow multi-session)."""
    if resuming:
        return "session"
    if explicit is not None:
        return explicit
    if saved is not None and multi_session:
        return saved
    return "same-dir" if multi_session else "session"


def max_sessions_for(mode: SpawnMode, capacity: int | None) -> int:
    """1 for a single session, else ``capacity`` (default 32)."""
    if mode == "session":
        return 1
    if capacity is None:
        return DEFAULT_CAPACITY
    if capacity < 1:
        raise ValueError(f"capacity must be a positive integer, got {capacity}")
    return capacity


# ---- polling ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PollPlan:
    """Wait ``delay`` seconds before the next poll; ``delay is None``: do not poll again until
    the capacity changes (at capacity with the at-capacity poll turned off)."""

    state: CapacityState
    delay: float | None

    @property
    def waits_for_capacity(self) -> bool:
        return self.state == "full"


def plan_next_poll(config: PollConfig, *, active: int, max_sessions: int, multi_session: bool,
                   got_work: bool = False, poll_duration: float = 0.0) -> PollPlan:
    """The wait before the next poll.

    * At capacity: the at-capacity interval (default 10 min; the loop also wakes at once when
      a session ends), or ``None`` (no polling at all; heartbeats keep the leases) when it is 0.
    * Work just arrived: poll again at once (more may be queued).
    * Otherwise the idle / partial interval, minus the time the (long) poll itself took: a
      server that held the poll for 8 s has already spaced the polls out.
    """
    state = capacity_state(active, max_sessions)
    interval_s = poll_interval_ms(config, state, multi_session=multi_session) / 1000.0
    if state == "full":
        return PollPlan(state, interval_s if interval_s > 0 else None)
    if got_work:
        return PollPlan(state, 0.0)
    return PollPlan(state, max(0.0, interval_s - max(0.0, poll_duration)))


def heartbeat_interval_s(config: PollConfig, lease_ttl_s: float | None = None) -> float:
    """``non_exclusive_heartbeat_interval_ms`` (else 60 s), but never more than a third of the
    server's lease TTL (at least 1 s): a lease never lapses under a healthy bridge, whatever its
    capacity and whatever the two settings say."""
    interval = (config.non_exclusive_heartbeat_interval_ms / 1000.0
                if config.non_exclusive_heartbeat_interval_ms > 0 else DEFAULT_HEARTBEAT_S)
    if lease_ttl_s is not None and lease_ttl_s > 0:
        interval = min(interval, max(1.0, lease_ttl_s / 3.0))
    return interval


# ---- backoff ----------------------------------------------------------------------------------

class PollBackoff:
    """The bridge's two retry tracks (docs/protocol.md §11.4). A success resets both; a gap since the
    previous error (on either track) longer than ``sleep_threshold`` means the machine was
    suspended: both tracks restart, so the nap never counts against the 10-minute budget."""

    def __init__(self, connection: Backoff | None = None, general: Backoff | None = None,
                 sleep_threshold: float = SLEEP_DETECTION_S) -> None:
        self.connection = connection or bridge_connection()
        self.general = general or bridge_general()
        self.sleep_threshold = sleep_threshold
        self._last_error_at: float | None = None
        self._failing_since: float | None = None
        self.sleeps_detected = 0

    @property
    def failing_since(self) -> float | None:
        """When the current outage began (None while healthy)."""
        return self._failing_since

    def track(self, kind: ErrorKind) -> Backoff:
        return self.connection if kind == "connection" else self.general

    def failure(self, kind: ErrorKind, now: float, rnd: RandomSource,
                retry_after: float | None = None) -> BackoffDecision:
        slept = self._last_error_at is not None and now - self._last_error_at > self.sleep_threshold
        if slept:
            self.connection.reset()
            self.general.reset()
            self.sleeps_detected += 1
            self._failing_since = now
        if self._failing_since is None:
            self._failing_since = now
        self._last_error_at = now
        decision = self.track(kind).failure(now, rnd, retry_after)
        if slept and not decision.slept:
            decision = BackoffDecision(decision.delay, decision.reason, decision.attempt, decision.elapsed, True)
        return decision

    def success(self, now: float) -> bool:
        """Record a successful poll; True when it ends an outage."""
        recovered = self._failing_since is not None
        self.connection.success(now)
        self.general.success(now)
        self._last_error_at = None
        self._failing_since = None
        return recovered


def stop_work_retry() -> Backoff:
    """``stopWork`` retries: 3 attempts in all, waiting 1 s then 2 s (±25 %)."""
    return Backoff(1.0, 4.0, 0.25, max_attempts=2)


# ---- worker token refresh -----------------------------------------------------------------------

TOKEN_EXPIRY_GRACE_S: Final = 600.0
"""How long a session's transport waits for a fresh token after its worker token expired (the
refresh could not get through: E7 failed, the server was down) before it gives up; the same
budget as the other give-ups (docs/protocol.md §10)."""


def jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix seconds) of a JWT, unverified (docs/protocol.md §9.2); an optional
    ``sk-ant-si-`` prefix is stripped. None when the token is not a decodable JWT with ``exp``."""
    if token.startswith("sk-ant-si-"):
        token = token[len("sk-ant-si-"):]
    parts = token.split(".")
    if len(parts) != 3 or not parts[1]:
        return None
    try:
        raw = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


@dataclass
class _Entry:
    due: float
    last_request: float | None = None


@dataclass
class RefreshSchedule(Generic[K]):
    """When to ask for a fresh worker token, per session (``createTokenRefreshScheduler``).

    All times are wall-clock seconds (a JWT's ``exp`` is). :meth:`schedule` with a token's
    expiry arms ``exp − buffer`` (at once when already inside the buffer, but never sooner than
    ``min_gap`` after the previous request); an undecodable token keeps the current entry.
    """

    buffer: float = REFRESH_BUFFER_S
    min_gap: float = REFRESH_MIN_GAP_S
    follow_up: float = REFRESH_FOLLOW_UP_S
    retry: float = REFRESH_RETRY_S
    _entries: dict[K, _Entry] = field(default_factory=dict)

    def schedule(self, key: K, expires_at: float | None, now: float) -> float | None:
        """(Re)arm for a token that expires at ``expires_at``; returns the due time."""
        entry = self._entries.get(key)
        if expires_at is None:
            return entry.due if entry else None
        due = max(now, expires_at - self.buffer)
        last = entry.last_request if entry else None
        if last is not None:
            due = max(due, last + self.min_gap)
        self._entries[key] = _Entry(due, last)
        return due

    def requested(self, key: K, now: float) -> None:
        """A refresh was asked for (E7 succeeded): follow up later unless a fresh token re-arms it."""
        self._entries[key] = _Entry(now + max(self.follow_up, self.min_gap), now)

    def failed(self, key: K, now: float) -> None:
        """The refresh request failed: retry after ``retry`` seconds."""
        self._entries[key] = _Entry(now + self.retry, now)

    def cancel(self, key: K) -> None:
        self._entries.pop(key, None)

    def due(self, now: float) -> list[K]:
        return [k for k, e in self._entries.items() if e.due <= now]

    def due_at(self, key: K) -> float | None:
        entry = self._entries.get(key)
        return entry.due if entry else None

    def next_due(self) -> float | None:
        return min((e.due for e in self._entries.values()), default=None)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)


# ---- per-session timeout ------------------------------------------------------------------------

def session_deadline(started_at: float, timeout_s: float | None) -> float | None:
    """When the watchdog ends a session (None: no watchdog; ``--session-timeout 0``)."""
    if timeout_s is None or timeout_s <= 0 or not math.isfinite(timeout_s):
        return None
    return started_at + timeout_s


# ---- teardown -----------------------------------------------------------------------------------

TeardownAction = Literal["stop_polling", "terminate_agents", "remove_worktrees", "stop_work", "archive",
                         "deregister", "clear_pointer"]
TEARDOWN_ORDER: Final[tuple[TeardownAction, ...]] = (
    "stop_polling", "terminate_agents", "remove_worktrees", "stop_work", "archive", "deregister", "clear_pointer",
)


@dataclass(frozen=True)
class TeardownStep:
    action: TeardownAction
    targets: tuple[str, ...] = ()
    """Session ids, work ids or worktree paths the step applies to."""
    deadline_s: float | None = None


@dataclass(frozen=True)
class ActiveWork:
    session_id: str
    work_id: str
    worktree: str | None = None


def plan_teardown(*, active: Sequence[ActiveWork], archive: Sequence[str], environment_id: str | None,
                  pointer: bool, grace_s: float = SHUTDOWN_GRACE_S, keep_resumable: bool = False,
                  keep_session: str | None = None, superseded: bool = False) -> list[TeardownStep]:
    """docs/protocol.md §11.8: stop polling → SIGTERM the agents (``grace_s``, then SIGKILL) → remove
    worktrees → ``stopWork(force)`` → archive → deregister → clear the pointer.

    ``archive`` lists every session to archive (active ones and the initial one), deduplicated in
    order. ``keep_resumable`` (a crash-like exit that should stay resumable with ``--continue``)
    stops after the work items: nothing is archived, the environment stays, the pointer too.
    ``keep_session`` (a requested stop — Ctrl-C — of a bridge whose pointer names that session)
    leaves that one session unarchived and the pointer in place, so that ``--continue`` resumes
    it (the environment is deregistered; re-registering re-attaches it); the rest goes as usual.
    ``superseded`` (the environment was registered again by another bridge, which now owns it, its
    sessions and their work) stops the agents, removes worktrees and clears the pointer (a later
    bridge here must not take the session back, nor archive it as ``replaced``): nothing is stopped,
    archived or deregistered on the server.
    Steps with nothing to do are left out, except the first two (always shown).
    """
    steps = [TeardownStep("stop_polling"),
             TeardownStep("terminate_agents", tuple(a.session_id for a in active), grace_s)]
    worktrees = tuple(a.worktree for a in active if a.worktree)
    if worktrees:
        steps.append(TeardownStep("remove_worktrees", worktrees))
    if superseded:
        return [*steps, TeardownStep("clear_pointer")] if pointer else steps
    if active:
        steps.append(TeardownStep("stop_work", tuple(a.work_id for a in active)))
    if keep_resumable:
        return steps
    kept = id_body(keep_session) if keep_session is not None else None
    to_archive = tuple(s for s in dict.fromkeys(archive) if kept is None or id_body(s) != kept)
    if to_archive:
        steps.append(TeardownStep("archive", to_archive))
    if environment_id is not None:
        steps.append(TeardownStep("deregister", (environment_id,)))
    if pointer and kept is None:
        steps.append(TeardownStep("clear_pointer"))
    return steps
