"""The hybrid write path's queue: stream_event coalescing and POST batches (docs/protocol.md §8.2).

Sans-I/O: the caller passes ``now`` and sends what :meth:`WriteBatcher.take` returns.

* ``stream_event`` messages wait up to ``window`` seconds (100 ms) after the first of
  them was buffered, so token deltas travel together;
* any other write first moves the buffered stream events to the send queue, then
  itself: the order of writes is always kept;
* a batch holds at most ``max_batch`` events (500) and, beyond its first event,
  at most ``max_batch_bytes``;
* the queue is bounded (``capacity``, 100 000): :meth:`add` raises
  :class:`BatcherFull` rather than grow.

:func:`classify_post_status` says what to do with the answer to one POST.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Final, Literal

from tether.protocol.messages import STREAM_EVENT

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_MAX_BATCH",
    "DEFAULT_MAX_BATCH_BYTES",
    "DEFAULT_WINDOW",
    "BatcherFull",
    "PostVerdict",
    "WriteBatcher",
    "classify_post_status",
]

DEFAULT_WINDOW: Final = 0.1
DEFAULT_MAX_BATCH: Final = 500
DEFAULT_MAX_BATCH_BYTES: Final = 8 << 20  # under the server's 10 MiB body limit
DEFAULT_CAPACITY: Final = 100_000


class BatcherFull(RuntimeError):
    """The write queue is at capacity."""


@dataclass(frozen=True)
class _Item:
    message: dict[str, Any]
    size: int


class WriteBatcher:
    __slots__ = ("_capacity", "_max_batch", "_max_bytes", "_ready", "_stream", "_stream_since", "_window")

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        max_batch: int = DEFAULT_MAX_BATCH,
        capacity: int = DEFAULT_CAPACITY,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    ) -> None:
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        if max_batch < 1 or capacity < 1 or max_batch_bytes < 1:
            raise ValueError("max_batch, capacity and max_batch_bytes must be at least 1")
        self._window = window
        self._max_batch = max_batch
        self._max_bytes = max_batch_bytes
        self._capacity = capacity
        self._ready: deque[_Item] = deque()
        self._stream: list[_Item] = []
        self._stream_since: float | None = None

    # -- state ---------------------------------------------------------------

    def __len__(self) -> int:
        """Messages waiting (ready or coalescing)."""
        return len(self._ready) + len(self._stream)

    @property
    def coalescing_count(self) -> int:
        return len(self._stream)

    def pending(self) -> list[dict[str, Any]]:
        """Every queued message, oldest first (ready ones, then the coalescing stream events)."""
        return [item.message for item in (*self._ready, *self._stream)]

    # -- input ---------------------------------------------------------------

    def add(self, message: dict[str, Any], now: float, size: int = 0) -> None:
        """Queue one message; ``size`` is its encoded length (for the byte bound)."""
        if len(self) >= self._capacity:
            raise BatcherFull(f"write queue is full ({self._capacity} messages)")
        item = _Item(message, max(0, size))
        if message.get("type") == STREAM_EVENT:
            if not self._stream:
                self._stream_since = now
            self._stream.append(item)
            return
        self._release_stream()
        self._ready.append(item)

    def add_front(self, messages: list[tuple[dict[str, Any], int]]) -> None:
        """Put older messages (a replay) ahead of everything queued, keeping their order.

        Replays are never refused for capacity: they were accepted once already.
        """
        for message, size in reversed(messages):
            self._ready.appendleft(_Item(message, max(0, size)))

    def flush(self) -> None:
        """Release coalescing stream events now (used when closing)."""
        self._release_stream()

    def _release_stream(self) -> None:
        if self._stream:
            self._ready.extend(self._stream)
            self._stream = []
        self._stream_since = None

    # -- output --------------------------------------------------------------

    def wait_time(self, now: float) -> float | None:
        """Seconds until :meth:`take` has something (0 = now); None when the queue is empty."""
        if self._ready:
            return 0.0
        if self._stream_since is None:
            return None
        return max(0.0, self._stream_since + self._window - now)

    def take(self, now: float) -> list[dict[str, Any]]:
        """The next batch to POST, oldest first (empty when nothing is due)."""
        if self._stream_since is not None and now >= self._stream_since + self._window:
            self._release_stream()
        batch: list[dict[str, Any]] = []
        used = 0
        while self._ready and len(batch) < self._max_batch:
            size = self._ready[0].size
            if batch and used + size > self._max_bytes:
                break
            batch.append(self._ready.popleft().message)
            used += size
        return batch


PostVerdict = Literal["ok", "retry", "drop", "reject"]


def classify_post_status(status: int | None) -> PostVerdict:
    """What one POST's answer means (docs/protocol.md §8.2).

    ``None`` (no answer: connection refused/reset, timeout) and 408/429/5xx are
    retried; 2xx is done; 401/403 are ``reject``: dropped now, replayed after the next
    reconnect or token change; any other status is dropped for good.
    """
    if status is None:
        return "retry"
    if 200 <= status < 300:
        return "ok"
    if status in (408, 429) or status >= 500:
        return "retry"
    if status in (401, 403):
        return "reject"
    return "drop"
