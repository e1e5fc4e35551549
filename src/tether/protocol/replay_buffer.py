"""ReplayBuffer: outbound messages kept until the server has acknowledged them (docs/protocol.md §8.1).

A transport stamps a ``uuid`` on everything it writes, so re-sending is safe: the
server deduplicates by ``uuid`` (docs/protocol.md §4.3). The buffer remembers the last
``capacity`` messages (default 1,000) that are not yet acknowledged:

* :meth:`record` when a message is accepted for sending (state ``pending``);
* :meth:`ack` once a write of it was answered 2xx (it leaves the buffer);
* :meth:`mark_rejected` when a write was refused in a way a new credential or a new
  connection may cure (401/403): the message waits for the next reconnect;
* :meth:`take_replay` after a reconnect or a token change: the rejected messages, oldest
  first, back to ``pending``.

When more than ``capacity`` messages are unacknowledged the oldest is forgotten
(counted in :attr:`evicted`): the buffer bounds memory, it is not the send queue.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

__all__ = [
    "DEFAULT_REPLAY_CAPACITY",
    "EntryState",
    "ReplayBuffer",
    "message_uuid",
]

DEFAULT_REPLAY_CAPACITY: Final = 1000

EntryState = Literal["pending", "rejected"]


def message_uuid(message: Mapping[str, Any]) -> str | None:
    """The message's non-empty string ``uuid``, or None."""
    value = message.get("uuid")
    return value if isinstance(value, str) and value else None


class ReplayBuffer:
    __slots__ = ("_capacity", "_entries", "evicted")

    def __init__(self, capacity: int = DEFAULT_REPLAY_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[dict[str, Any], EntryState]] = OrderedDict()
        self.evicted = 0

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._entries

    def record(self, message: dict[str, Any]) -> bool:
        """Keep ``message`` until acknowledged; False when it has no uuid (not replayable).

        Recording a uuid that is already held replaces the message and keeps its place.
        """
        uuid = message_uuid(message)
        if uuid is None:
            return False
        if uuid in self._entries:
            self._entries[uuid] = (message, "pending")
            return True
        if len(self._entries) >= self._capacity:
            self._entries.popitem(last=False)
            self.evicted += 1
        self._entries[uuid] = (message, "pending")
        return True

    def ack(self, uuids: Iterable[str]) -> int:
        """The server has these; forget them. Returns how many were held."""
        count = 0
        for uuid in uuids:
            if self._entries.pop(uuid, None) is not None:
                count += 1
        return count

    def mark_rejected(self, uuids: Iterable[str]) -> int:
        """A write of these was refused for now (auth): re-send after the next reconnect."""
        count = 0
        for uuid in uuids:
            entry = self._entries.get(uuid)
            if entry is not None:
                self._entries[uuid] = (entry[0], "rejected")
                count += 1
        return count

    def state_of(self, uuid: str) -> EntryState | None:
        entry = self._entries.get(uuid)
        return None if entry is None else entry[1]

    @property
    def rejected_count(self) -> int:
        return sum(1 for _, state in self._entries.values() if state == "rejected")

    def take_replay(self) -> list[dict[str, Any]]:
        """The rejected messages, oldest first, now pending again (the caller re-sends them)."""
        rejected = [(uuid, message) for uuid, (message, state) in self._entries.items() if state == "rejected"]
        for uuid, message in rejected:
            self._entries[uuid] = (message, "pending")
        return [message for _, message in rejected]

    def unacked(self) -> list[dict[str, Any]]:
        """Every held message, oldest first."""
        return [message for message, _ in self._entries.values()]
