"""Delivery states of inbound events, known in memory ahead of the store (docs/protocol.md §4.4).

An inbound event (a prompt, a client control request, a permission answer) moves
``pending → received → processing → processed`` and never back. Each move is news for the
session's subscribers (a ``delivery_update`` frame: the web client shows queued → delivered →
processed). Writing every move the moment a stream sends an event costs a write transaction per
event and stream; the ledger instead answers at once whether a move is news, remembers it, and
hands out the moves not yet in the store for one batched write.

Losing moves that were not yet written (a crash between two batches) is allowed: such an event
counts as unconfirmed after the restart and is sent to its worker again, which deduplicates by
``uuid``. Moves a worker acknowledged itself (CCR v2 W9) are written before the server answers;
the ledger only hears of them (:meth:`DeliveryLedger.saved`) so that news is told once.

Pure: no I/O, no clock. The ledger remembers the last ``max_known`` events it heard of (older
ones are forgotten first); a forgotten event is judged by the state its caller saw.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "STATES",
    "DeliveryLedger",
    "Key",
    "V1Turns",
    "check_state",
    "rank",
    "v1_turns",
]

STATES: Final = ("pending", "received", "processing", "processed")
_RANK: Final = {state: rank for rank, state in enumerate(STATES)}

Key = tuple[str, str]  # (session id, event uuid)


def rank(state: str | None) -> int:
    """The order of ``state`` (an unknown or missing state counts as ``pending``)."""
    return _RANK.get(state or "pending", 0)


def check_state(state: str) -> None:
    if state not in _RANK:
        raise ValueError(f"unknown delivery state {state!r}; expected one of {', '.join(STATES)}")


class DeliveryLedger:
    __slots__ = ("_known", "_max_known", "_unsaved")

    def __init__(self, max_known: int = 50_000) -> None:
        if max_known < 1:
            raise ValueError(f"max_known must be at least 1, got {max_known}")
        self._max_known = max_known
        self._known: dict[Key, str] = {}  # insertion-ordered: the oldest is forgotten first
        self._unsaved: dict[Key, str] = {}

    def state(self, session_id: str, uuid: str) -> str | None:
        """The furthest state heard of for this event, if the ledger still remembers it."""
        return self._known.get((session_id, uuid))

    def move(self, session_id: str, uuid: str, state: str, *, seen: str | None = None) -> bool:
        """A stream moved the event to ``state`` (``seen``: the state it read with the event).
        True when that is news: remember it, to be written with the next batch."""
        key = (session_id, uuid)
        if not self._advances(key, state, seen):
            return False
        self._remember(key, state)
        self._unsaved[key] = state
        return True

    def saved(self, session_id: str, uuid: str, state: str, *, seen: str | None = None) -> bool:
        """The event was moved to ``state`` in the store already (``seen``: its state before).
        True when that is news for subscribers."""
        key = (session_id, uuid)
        if not self._advances(key, state, seen):
            return False
        self._remember(key, state)
        if rank(self._unsaved.get(key)) <= rank(state):
            self._unsaved.pop(key, None)  # the store is at least as far already
        return True

    @property
    def unsaved_count(self) -> int:
        return len(self._unsaved)

    def take_unsaved(self) -> dict[str, dict[str, list[str]]]:
        """The moves not yet written, by session and state (uuids in the order they moved);
        the caller writes them now. A later move of the same event is news again."""
        batch: dict[str, dict[str, list[str]]] = {}
        for (session_id, uuid), state in self._unsaved.items():
            batch.setdefault(session_id, {}).setdefault(state, []).append(uuid)
        self._unsaved = {}
        return batch

    def restore(self, batch: dict[str, dict[str, list[str]]]) -> None:
        """A batch that could not be written goes back (behind anything newer)."""
        for session_id, states in batch.items():
            for state, uuids in states.items():
                for uuid in uuids:
                    key = (session_id, uuid)
                    if rank(self._unsaved.get(key)) < rank(state):
                        self._unsaved[key] = state

    def _advances(self, key: Key, state: str, seen: str | None) -> bool:
        check_state(state)
        return rank(state) > max(rank(seen), rank(self._known.get(key)))

    def _remember(self, key: Key, state: str) -> None:
        known = self._known
        known.pop(key, None)
        known[key] = state
        if len(known) > self._max_known:
            del known[next(iter(known))]


# --- v1: what a worker's output says about its prompts --------------------------------------

@dataclass(frozen=True)
class V1Turns:
    """The delivery moves one batch of v1 worker output implies (docs/protocol.md §4.4).

    A prompt's ``isReplay`` echo says the agent started it (``processing``); only its turn's
    ``result``, once stored, says it is done (``processed``, for every prompt started so far). A
    prompt marked done at its echo would be lost with an agent killed mid-turn: the fresh agent
    of ``tether rc --continue`` is sent only what is not processed."""

    started: tuple[str, ...] = ()  # echoed before the batch's last new result: processing, then done
    finished: bool = False  # a new result: every prompt started so far is processed
    started_after: tuple[str, ...] = ()  # echoed after it: their turn runs on

    @property
    def moves(self) -> bool:
        return bool(self.started or self.finished or self.started_after)


def v1_turns(batch: Sequence[Mapping[str, Any]], new_results: Container[str]) -> V1Turns:
    """``batch``: the worker's messages in the order it wrote them; ``new_results``: the uuids of
    its ``result`` messages that were stored just now (a re-sent result, already in the log, ended
    its turn when it was first stored, and must not end the turn of a prompt started since)."""
    last = -1
    for index, msg in enumerate(batch):
        if msg.get("type") == "result" and msg.get("uuid") in new_results:
            last = index
    echoes = [(index, msg["uuid"]) for index, msg in enumerate(batch)
              if msg.get("type") == "user" and msg.get("isReplay") and isinstance(msg.get("uuid"), str)]
    return V1Turns(started=tuple(u for i, u in echoes if i < last), finished=last >= 0,
                   started_after=tuple(u for i, u in echoes if i > last))
