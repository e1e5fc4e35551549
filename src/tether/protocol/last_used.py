"""When to record that a credential was used (``last_used_at``). Pure.

Settings and ``GET /v1/tokens`` show when each token was last used; writing that on every
request would put a database write on every authenticated call. :class:`LastUsedThrottle`
allows one write per credential per interval (a minute by default): a use is recorded when
neither the stored value nor a write this process already made is younger than the interval.
The stored value keeps the rule across restarts; the in-memory record keeps two requests
that read the same stored value from both writing. The record is bounded (oldest forgotten
first): forgetting only costs a write that the stored value would then also allow.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_INTERVAL",
    "LastUsedThrottle",
]

DEFAULT_INTERVAL: Final = 60.0
DEFAULT_CAPACITY: Final = 10_000


class LastUsedThrottle:
    __slots__ = ("_capacity", "_interval", "_written")

    def __init__(self, interval: float = DEFAULT_INTERVAL, capacity: int = DEFAULT_CAPACITY) -> None:
        if interval <= 0 or capacity < 1:
            raise ValueError("interval must be positive and capacity at least 1")
        self._interval = interval
        self._capacity = capacity
        self._written: OrderedDict[str, float] = OrderedDict()

    def due(self, key: str, now: float, stored: float | None) -> bool:
        """Whether a use of ``key`` at ``now`` should be written (``stored``: the value on record).
        True also records the write as made, so the caller must then write ``now``."""
        last = self._written.get(key)
        if stored is not None and (last is None or stored > last):
            last = stored
        if last is not None and 0 <= now - last < self._interval:
            return False
        self._written[key] = now
        self._written.move_to_end(key)
        while len(self._written) > self._capacity:
            self._written.popitem(last=False)
        return True

    def forget(self, key: str) -> None:
        """The write did not happen (it failed): let the next use try again."""
        self._written.pop(key, None)

    def __len__(self) -> int:
        return len(self._written)
