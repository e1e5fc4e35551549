"""Reconnect and liveness rules of a remote client's subscribe socket (docs/protocol.md §8.4, §10, §13).

Sans-I/O: the adapter (``tether.remote.sessions_ws``) reports what happened to the socket
and sleeps for the delay it is told; ``now`` is passed in where time matters.

:class:`SubscribeReconnectPolicy` decides after each close or failed open:

* close **4003** (unauthorized) — stop at once, never retried;
* close **4001** (session not found; transient while the server compacts) — retried at most
  3 times, ``2 s × n`` for the n-th retry (2, 4, 6 s);
* any other close (1006, 1012 server restart, a failed open …) — only once the socket has
  been open at least once: retried every 2 s, at most 5 attempts in a row; a successful
  open resets that count. A socket that never opened is not retried (the caller reports
  the first failure: wrong URL, server down at start). The 4001 count resets only when a
  frame arrives: a server closes an unknown session right after accepting the upgrade, so
  an open alone proves nothing about the session;
* a streak that began with close **1012** (the server announced a restart, docs/protocol.md §4.7)
  gets 30 attempts (a minute) instead of 5: the server said it is coming back, and a restart
  on a busy machine can take longer than 10 s (the reference knows no 1012);
* a **viewer** never gives up on ordinary drops (it watches an agent that may be asleep or
  restarting for hours): 2 s for the first 5 attempts, then doubling to a 30 s cap;
* :meth:`SubscribeReconnectPolicy.forced` (``reconnect()`` on demand) resets the counters
  and reopens after 500 ms;
* after :meth:`SubscribeReconnectPolicy.stop` (the user detached) nothing reconnects.

:class:`ResponseWatchdog` is the 60 s "remote session may be unresponsive" rule of
docs/protocol.md §13: armed by each send, disarmed by any inbound frame; viewers have none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "CLOSE_SERVER_RESTART",
    "CLOSE_SESSION_NOT_FOUND",
    "CLOSE_UNAUTHORIZED",
    "COMPACTING_RESPONSE_TIMEOUT_S",
    "FORCED_RECONNECT_DELAY_S",
    "MAX_NOT_FOUND_RETRIES",
    "MAX_RECONNECT_ATTEMPTS",
    "MAX_RESTART_ATTEMPTS",
    "PING_INTERVAL_S",
    "RECONNECT_DELAY_S",
    "RESPONSE_TIMEOUT_S",
    "VIEWER_MAX_DELAY_S",
    "Reconnect",
    "ResponseWatchdog",
    "Stop",
    "StopReason",
    "SubscribeDecision",
    "SubscribeReconnectPolicy",
    "stop_message",
    "viewer_delay",
]

CLOSE_SESSION_NOT_FOUND: Final = 4001
CLOSE_UNAUTHORIZED: Final = 4003

RECONNECT_DELAY_S: Final = 2.0
MAX_RECONNECT_ATTEMPTS: Final = 5
MAX_RESTART_ATTEMPTS: Final = 30
CLOSE_SERVER_RESTART: Final = 1012
MAX_NOT_FOUND_RETRIES: Final = 3
FORCED_RECONNECT_DELAY_S: Final = 0.5
VIEWER_MAX_DELAY_S: Final = 30.0
PING_INTERVAL_S: Final = 30.0
RESPONSE_TIMEOUT_S: Final = 60.0
COMPACTING_RESPONSE_TIMEOUT_S: Final = 180.0

StopReason = Literal["unauthorized", "not_found", "gave_up", "never_connected", "stopped"]


@dataclass(frozen=True)
class Reconnect:
    """Open the socket again after ``delay`` seconds; ``attempt`` counts this streak (1-based)."""

    delay: float
    attempt: int
    not_found: bool = False


@dataclass(frozen=True)
class Stop:
    """Do not reconnect; ``reason`` says why (the caller turns it into a message)."""

    reason: StopReason
    code: int | None


SubscribeDecision = Reconnect | Stop


class SubscribeReconnectPolicy:
    """One subscribe socket's reconnect budget across its connections."""

    __slots__ = ("_attempts", "_ever_open", "_not_found", "_restarting", "_stopped", "viewer")

    def __init__(self, *, viewer: bool = False) -> None:
        self.viewer = viewer
        self._attempts = 0
        self._not_found = 0
        self._ever_open = False
        self._stopped = False
        self._restarting = False

    def opened(self) -> None:
        """The upgrade succeeded: the streak of ordinary failures ends."""
        self._ever_open = True
        self._attempts = 0
        self._restarting = False

    def frame_received(self) -> None:
        """A frame arrived: the session exists, the 4001 count starts over."""
        self._not_found = 0

    def stop(self) -> None:
        """The owner closed the socket on purpose: every later close is final."""
        self._stopped = True

    def forced(self) -> Reconnect:
        """``reconnect()`` on demand: fresh counters, reopen after 500 ms."""
        self._attempts = 0
        self._not_found = 0
        self._restarting = False
        return Reconnect(FORCED_RECONNECT_DELAY_S, 0)

    def closed(self, code: int | None) -> SubscribeDecision:
        """The socket closed (or an open failed) with ``code`` (None: no close frame)."""
        if self._stopped:
            return Stop("stopped", code)
        if code == CLOSE_UNAUTHORIZED:
            return Stop("unauthorized", code)
        if code == CLOSE_SESSION_NOT_FOUND:
            self._not_found += 1
            if self._not_found > MAX_NOT_FOUND_RETRIES:
                return Stop("not_found", code)
            return Reconnect(RECONNECT_DELAY_S * self._not_found, self._not_found, not_found=True)
        if not self._ever_open:
            return Stop("never_connected", code)
        self._attempts += 1
        if self._attempts == 1:
            self._restarting = code == CLOSE_SERVER_RESTART
        if self.viewer:
            return Reconnect(viewer_delay(self._attempts), self._attempts)
        if self._attempts > (MAX_RESTART_ATTEMPTS if self._restarting else MAX_RECONNECT_ATTEMPTS):
            return Stop("gave_up", code)
        return Reconnect(RECONNECT_DELAY_S, self._attempts)


def viewer_delay(attempt: int) -> float:
    """2 s for the first 5 attempts, then 4, 8, 16, 30, 30 … s."""
    if attempt <= MAX_RECONNECT_ATTEMPTS:
        return RECONNECT_DELAY_S
    exponent = min(attempt - MAX_RECONNECT_ATTEMPTS, 16)
    return min(RECONNECT_DELAY_S * 2.0**exponent, VIEWER_MAX_DELAY_S)


def stop_message(stop: Stop) -> str:
    """What to tell the person when the socket stops for good, and what to do next."""
    if stop.reason == "unauthorized":
        return ("The server refused this login (close 4003): the token was revoked, expired or lacks access "
                "to this session. Run `tether login` again, then re-attach.")
    if stop.reason == "not_found":
        return ("The server no longer knows this session (close 4001). It may have been deleted; "
                "list sessions with `tether sessions --all`.")
    if stop.reason == "gave_up":
        return ("Lost the connection to the server and reconnecting failed (every 2 s, "
                f"{MAX_RECONNECT_ATTEMPTS} times; for a minute after a server restart). Check that the server is "
                "up, then attach again (or use --viewer to wait for it).")
    if stop.reason == "never_connected":
        return "Could not connect to the session's live stream. Check the server URL and that it is running."
    return "Detached."


class ResponseWatchdog:
    """Warn and reconnect when nothing at all arrives within 60 s (180 s while compacting) of a send."""

    __slots__ = ("_armed_at", "compacting", "enabled")

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.compacting = False
        self._armed_at: float | None = None

    @property
    def armed(self) -> bool:
        return self._armed_at is not None

    @property
    def timeout(self) -> float:
        return COMPACTING_RESPONSE_TIMEOUT_S if self.compacting else RESPONSE_TIMEOUT_S

    def sent(self, now: float) -> None:
        """A prompt, answer or interrupt went out at ``now`` (a later send does not push the deadline)."""
        if self.enabled and self._armed_at is None:
            self._armed_at = now

    def received(self) -> None:
        """Any inbound frame: the remote is alive."""
        self._armed_at = None

    def deadline(self) -> float | None:
        return None if self._armed_at is None else self._armed_at + self.timeout

    def check(self, now: float) -> bool:
        """True once (then disarmed) when the deadline passed: warn and force a reconnect."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return False
        self._armed_at = None
        return True
