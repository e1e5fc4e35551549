"""The permission bridge of a remote client (docs/protocol.md §7.4, §13, §4.6).

Pure bookkeeping of the permission requests a client is showing, and the answer frames it
sends on the subscribe socket. The server decides who answered first; this side only has
to drop a question as soon as the log says it was settled anywhere:

* a ``can_use_tool`` request is shown once (the server sends pending requests again on
  every connect, so duplicates by ``request_id`` are ignored);
* a logged ``control_response`` for it (answered here or elsewhere) or a
  ``control_cancel_request`` (matched by ``tool_use_id`` first, then ``request_id``)
  removes it; so does an ``already_resolved`` error for our own late answer;
* answers carry only ``behavior`` + ``updatedInput`` or ``behavior`` + ``message``, like
  ``RemoteSessionManager.respondToPermissionRequest``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Generic, Protocol, TypeVar

__all__ = [
    "ABORTED_MESSAGE",
    "DENIED_MESSAGE",
    "PendingPermissions",
    "Question",
    "allow_frame",
    "deny_frame",
]

DENIED_MESSAGE: Final = "User denied permission"
ABORTED_MESSAGE: Final = "User aborted"


class Question(Protocol):
    @property
    def request_id(self) -> str: ...

    @property
    def tool_use_id(self) -> str | None: ...


Q = TypeVar("Q", bound=Question)


class PendingPermissions(Generic[Q]):
    """The open questions, oldest first."""

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[str, Q] = {}

    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._open

    def add(self, question: Q) -> bool:
        """True when the question is new (False: already shown)."""
        if question.request_id in self._open:
            return False
        self._open[question.request_id] = question
        return True

    def current(self) -> Q | None:
        """The question to answer next (the oldest)."""
        return next(iter(self._open.values()), None)

    def get(self, request_id: str) -> Q | None:
        return self._open.get(request_id)

    def all(self) -> list[Q]:
        return list(self._open.values())

    def resolve(self, request_id: str) -> Q | None:
        """The question was answered (anywhere): remove and return it, if it was open."""
        return self._open.pop(request_id, None)

    def cancel(self, request_id: str | None, tool_use_id: str | None = None) -> Q | None:
        """The worker withdrew it: match ``tool_use_id`` first, then ``request_id``."""
        if tool_use_id is not None:
            for rid, question in self._open.items():
                if question.tool_use_id == tool_use_id:
                    return self._open.pop(rid)
        return self._open.pop(request_id, None) if request_id is not None else None

    def clear(self) -> list[Q]:
        dropped = list(self._open.values())
        self._open.clear()
        return dropped


def allow_frame(request_id: str, tool_input: Mapping[str, Any]) -> dict[str, Any]:
    """``control_response`` allowing the call with its original input."""
    return _answer(request_id, {"behavior": "allow", "updatedInput": dict(tool_input)})


def deny_frame(request_id: str, message: str = DENIED_MESSAGE) -> dict[str, Any]:
    """``control_response`` denying the call (abort: ``message=ABORTED_MESSAGE``)."""
    return _answer(request_id, {"behavior": "deny", "message": message or DENIED_MESSAGE})


def _answer(request_id: str, decision: dict[str, Any]) -> dict[str, Any]:
    return {"type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": decision}}
