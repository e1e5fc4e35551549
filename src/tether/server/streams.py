"""Open sockets and streams by the credential that opened them, so that revoking a token,
lowering a role, logging out or ending a worker's work closes them at once (docs/protocol.md
§1, §4.4, §4.7).

Each open subscribe socket, v1 worker socket and v2 SSE stream registers one :class:`Holder`
under its keys (``token:<id>``, ``user:<id>``, ``work:<id>``, ``kid:<signing key>``) while it is open. The place that
revokes calls :meth:`OpenStreams.close_key` / :meth:`OpenStreams.role_changed` after its
commit; the holder's ``wake`` callback makes the stream's own task close it with the code. The
fan-out path never looks here: the registry is touched on connect, disconnect and revocation
only.

With several server instances (``--redis-url``) the stream may be open on another one: ``relay``
(set by broker/redis.py) sends each revocation there too, where :meth:`OpenStreams.apply` closes
what that instance holds.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator

from tether.protocol.access import role_fell
from tether.server.broker.wire import Control, KeyClosed, RoleFell

log = logging.getLogger("tether.server.streams")

# The code a revoked credential's sockets close with (docs/protocol.md §8.5): the token was revoked,
# the role fell, the user logged out, or the worker's work ended with nothing after it.
CLOSE_UNAUTHORIZED = 4003


class Holder:
    """One open socket or stream: the role it holds, and how to make it close."""

    __slots__ = ("closed", "role", "wake")

    def __init__(self, wake: Callable[[], object], role: str = "") -> None:
        self.wake = wake
        self.role = role
        self.closed: tuple[int, str] | None = None  # (close code, reason) once revoked

    def revoke(self, code: int, reason: str) -> bool:
        """Ask the stream to close with ``code``; False when it was already asked."""
        if self.closed is not None:
            return False
        self.closed = (code, reason)
        self.wake()
        return True


class OpenStreams:
    def __init__(self) -> None:
        self._by_key: dict[str, set[Holder]] = {}
        self.relay: Callable[[Control], None] | None = None  # to the other instances, if any

    @contextlib.contextmanager
    def hold(self, holder: Holder, keys: Iterable[str]) -> Iterator[Holder]:
        """Register ``holder`` under ``keys`` for the duration of the block."""
        keys = tuple(keys)
        for key in keys:
            self._by_key.setdefault(key, set()).add(holder)
        try:
            yield holder
        finally:
            for key in keys:
                holders = self._by_key.get(key)
                if holders is not None:
                    holders.discard(holder)
                    if not holders:
                        del self._by_key[key]

    def close_key(self, key: str, code: int, reason: str) -> int:
        """Close everything opened under ``key`` (on every instance); the number asked to close here."""
        if self.relay is not None:
            self.relay(KeyClosed(key, code, reason))
        return self._close_key(key, code, reason)

    def _close_key(self, key: str, code: int, reason: str) -> int:
        closed = sum(h.revoke(code, reason) for h in tuple(self._by_key.get(key, ())))
        if closed:
            log.info("closing %d stream(s) of %s: %s", closed, key, reason)
        return closed

    def role_changed(self, user_id: str, role: str | None, code: int, reason: str) -> int:
        """The user's role is now ``role`` (None: gone): close what holds more (on every instance)."""
        if self.relay is not None:
            self.relay(RoleFell(user_id, role, code, reason))
        return self._role_changed(user_id, role, code, reason)

    def apply(self, control: Control) -> int:
        """A revocation made on another instance: close what this one holds."""
        if isinstance(control, KeyClosed):
            return self._close_key(control.key, control.code, control.reason)
        return self._role_changed(control.user_id, control.role, control.code, control.reason)

    def _role_changed(self, user_id: str, role: str | None, code: int, reason: str) -> int:
        holders = [h for h in self._by_key.get(user_key(user_id), ()) if role_fell(h.role, role)]
        return sum(h.revoke(code, reason) for h in holders)

    def count(self, key: str) -> int:
        return len(self._by_key.get(key, ()))


def token_key(token_id: str) -> str:
    return f"token:{token_id}"


def user_key(user_id: str) -> str:
    return f"user:{user_id}"


def work_key(work_id: str) -> str:
    return f"work:{work_id}"


def kid_key(kid: str) -> str:
    """A worker-token signing key: its retirement closes what its tokens opened (docs/protocol.md §9.2)."""
    return f"kid:{kid}"
