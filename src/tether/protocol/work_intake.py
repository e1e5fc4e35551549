"""What the standalone bridge does with a polled work item (docs/protocol.md §11.2, §7.4, docs/flows.md §5). Pure.

The poll (E2) hands the bridge one work item at a time. :func:`classify_work` weighs it against
what the bridge knows (:class:`IntakeView`: the sessions it hosts and their work ids, the work it
finished, the items it holds, its capacity and spawn mode) and returns a :class:`WorkDecision`,
which the adapter (:mod:`tether.bridge.intake`) applies. The rows, first match wins:

============================================  ==========  ==================  ========
the item                                      action      reason              new work
============================================  ==========  ==================  ========
finished or refused here before               ``ignore``  ``seen``            no
already held                                  ``ignore``  ``held``            no
secret that does not decode                   ``reject``  ``bad_secret``      yes
a healthcheck                                 ``ack``     ``healthcheck``     yes
any other non-session type                    ``ack``     ``unknown_type``    yes
an invalid session id                         ``reject``  ``invalid_session`` yes
the hosted session's current item again       ``ack``     ``same_item``       no
a hosted session, another item                ``adopt``   ``redispatch``      yes
a session that ended here and is cleaned up   ``ignore``  ``closing``         no
at capacity, room to hold it                  ``hold``    ``at_capacity``     yes
at capacity, nothing more can be held         ``leave``   ``held_full``       yes
anything else                                 ``spawn``   ``new_session``     yes
============================================  ==========  ==================  ========

* ``reject``: stop the item (``stopWork``, not forced: the server may give it to someone else)
  and remember it as finished, so a re-delivery is ignored;
* ``ack`` of ``same_item``: the first acknowledgement was lost; acknowledge once more;
* ``adopt``: a re-dispatch of a session that runs here is a token update for its host, never a
  second agent (the answer to ``bridge/reconnect`` or a lapsed lease);
* ``hold``: not acknowledged; it starts when a session ends (at most :data:`MAX_HELD` wait);
* ``leave``: not acknowledged and not kept: the server delivers it again later;
* ``spawn``: acknowledge, then start an agent where :func:`session_placement` says.

"New work" tells the poll loop to poll again at once (more may be queued) rather than wait.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping
from dataclasses import dataclass
from typing import Final, Literal, Protocol

from tether.protocol.bridge_policy import SpawnMode
from tether.protocol.ids import id_body, is_valid_id, same_session_id
from tether.protocol.work_secret import WorkSecret, WorkSecretError, decode_work_secret

__all__ = [
    "MAX_HELD",
    "IntakeView",
    "Placement",
    "PolledWork",
    "WorkAction",
    "WorkDecision",
    "WorkReason",
    "classify_work",
    "session_placement",
]

MAX_HELD: Final = 64
"""Work items held at capacity at the most (each is a session waiting for a free slot)."""

WorkAction = Literal["ignore", "reject", "ack", "adopt", "hold", "leave", "spawn"]
WorkReason = Literal["seen", "held", "bad_secret", "healthcheck", "unknown_type", "invalid_session", "same_item",
                     "redispatch", "closing", "at_capacity", "held_full", "new_session"]
Placement = Literal["directory", "worktree", "workspace"]
"""Where a new session's agent runs: the bridge's directory, a fresh git worktree of it, or a
runner's per-session work directory (docs/protocol.md §11.9)."""


class PolledWork(Protocol):
    """The fields of a polled work item (E2's ``WorkResponse``) that decide what happens to it."""

    @property
    def id(self) -> str: ...

    @property
    def data_type(self) -> str: ...

    @property
    def data_id(self) -> str: ...

    @property
    def secret(self) -> str: ...


@dataclass(frozen=True)
class IntakeView:
    """What the bridge knows when an item arrives."""

    hosted: Mapping[str, str]
    """Session key (:func:`~tether.protocol.ids.id_body`) → the work id it runs under now."""
    completed: Container[str]
    """Work ids finished, refused or found gone here."""
    held: Collection[str]
    """Work ids held at capacity."""
    closing: Container[str]
    """Keys of sessions that ended here and are being stopped and archived."""
    max_sessions: int
    spawn_mode: SpawnMode
    workspaces: bool = False
    """A runner: every session gets its own work directory."""
    initial_session: str | None = None
    """The session the bridge created (or resumed) in its directory at start."""
    max_held: int = MAX_HELD

    @property
    def at_capacity(self) -> bool:
        return len(self.hosted) >= self.max_sessions


@dataclass(frozen=True)
class WorkDecision:
    action: WorkAction
    reason: WorkReason
    new_work: bool
    """Poll again at once (False: the item was nothing new)."""
    secret: WorkSecret | None = None
    """The decoded secret (every action but ``ignore`` and ``reject``)."""
    session_key: str | None = None
    """The session's key (``adopt``, ``hold``, ``spawn``, ``ack`` of ``same_item``)."""
    placement: Placement | None = None
    """Where the agent runs (``spawn``)."""
    initial: bool = False
    """The item is for the bridge's initial session (``spawn``)."""
    detail: str | None = None
    """Why the secret was refused (``bad_secret``)."""

    @property
    def token(self) -> str:
        """The item's worker token (for its ack)."""
        if self.secret is None:
            raise ValueError(f"a {self.action} decision carries no secret")
        return self.secret.session_ingress_token


def session_placement(spawn_mode: SpawnMode, *, workspaces: bool, initial: bool) -> Placement:
    """A runner's sessions get their own work directory; in worktree mode every session but the
    initial one (the directory's own) gets a worktree; else the bridge's directory."""
    if workspaces:
        return "workspace"
    if spawn_mode == "worktree" and not initial:
        return "worktree"
    return "directory"


def classify_work(work: PolledWork, view: IntakeView) -> WorkDecision:
    """The decision for ``work`` (the table in this module's docstring)."""
    if work.id in view.completed:
        return WorkDecision("ignore", "seen", False)
    if work.id in view.held:
        return WorkDecision("ignore", "held", False)
    try:
        secret = decode_work_secret(work.secret)
    except WorkSecretError as exc:
        return WorkDecision("reject", "bad_secret", True, detail=str(exc))
    if work.data_type == "healthcheck":
        return WorkDecision("ack", "healthcheck", True, secret)
    if work.data_type != "session":
        return WorkDecision("ack", "unknown_type", True, secret)
    sid = work.data_id
    if not is_valid_id(sid):
        return WorkDecision("reject", "invalid_session", True)
    return _session_work(work.id, sid, secret, view)


def _session_work(work_id: str, sid: str, secret: WorkSecret, view: IntakeView) -> WorkDecision:
    key = id_body(sid)
    hosted_work = view.hosted.get(key)
    if hosted_work is not None:
        if hosted_work == work_id:
            return WorkDecision("ack", "same_item", False, secret, key)
        return WorkDecision("adopt", "redispatch", True, secret, key)
    if key in view.closing:
        return WorkDecision("ignore", "closing", False, session_key=key)
    if view.at_capacity:
        if len(view.held) < view.max_held:
            return WorkDecision("hold", "at_capacity", True, secret, key)
        return WorkDecision("leave", "held_full", True, secret, key)
    initial = view.initial_session is not None and same_session_id(sid, view.initial_session)
    placement = session_placement(view.spawn_mode, workspaces=view.workspaces, initial=initial)
    return WorkDecision("spawn", "new_session", True, secret, key, placement, initial)
