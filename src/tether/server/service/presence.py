"""v1 worker presence across server instances (docs/protocol.md §4.4).

A v1 worker is connected while its socket is open, and a socket lives in one process. The session
row records which instance holds it (``worker_instance``); each instance beats its row in
``server_instances`` every ``instance_heartbeat_s``. An instance marks disconnected what it may
release (:func:`tether.protocol.instances.may_release`): at start, its own workers (their sockets
died with the old process); at each beat, the workers of instances that are gone (no beat for
``MISSED_BEATS`` intervals: crashed, or stopped without closing them) and of no known instance
— never a worker another live instance holds. Written on connect, disconnect and beat only; the
event paths never look here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace

from tether.protocol.instances import InstanceLiveness, may_release
from tether.server.clock import now
from tether.server.config import Config
from tether.server.hub import Hub, Live
from tether.server.runtime import instance_id
from tether.server.store import Store, Tx
from tether.server.store.records import SessionRecord

log = logging.getLogger("tether.server.presence")

__all__ = ["V1Presence"]

LEAVE_DEADLINE_S = 2.0
FORGET_AFTER_S = 7 * 24 * 3600.0  # an instance row silent this long is deleted (its data dir is gone)


class V1Presence:
    def __init__(self, config: Config, store: Store, hub: Hub, frame: Callable[[SessionRecord], Live],
                 held: Callable[[], Collection[str]]) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.frame = frame
        self.held = held  # the sessions whose v1 socket is open here
        self.liveness = InstanceLiveness(config.instance_heartbeat_s)
        self._id: str | None = None

    @property
    def instance(self) -> str:
        if self._id is None:
            self._id = instance_id(self.config.data_dir)
        return self._id

    async def start(self) -> None:
        """At start: this instance is alive; what it held before a restart is not."""
        await self.beat(starting=True)

    async def run(self) -> None:
        """Until cancelled: a beat every ``instance_heartbeat_s``."""
        while True:
            await asyncio.sleep(self.liveness.heartbeat_s)  # a period, not a wait for a condition
            try:
                await self.beat(starting=False)
            except Exception:  # the heartbeat must outlive one failed pass (the database away)
                log.exception("instance heartbeat failed")

    async def leave(self) -> None:
        """At shutdown (its sockets closed): the row goes, so nobody waits for it to lapse."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(LEAVE_DEADLINE_S), self.store.write() as tx:
                await tx.instances.leave(self.instance)

    async def beat(self, *, starting: bool) -> int:
        """Beat, then release what may be released: the number of workers marked disconnected."""
        me, t = self.instance, now()
        async with self.store.write() as tx:
            previous = await tx.instances.beat(me, t, starting=starting)
            alive = await tx.instances.alive(self.liveness.alive_since(t))
            released: list[SessionRecord] = []
            for body, owner in await tx.sessions.connected_workers():
                if may_release(owner, me, alive, starting=starting) and await tx.sessions.release_worker(body, owner):
                    session = await tx.sessions.get(body)
                    if session is not None:
                        released.append(session)
            if not starting and not self.liveness.alive(previous, t):
                released += await self._reclaim(tx, me)  # we were taken for gone (a long stall)
            if starting:
                await tx.instances.forget_before(t - FORGET_AFTER_S)
            frames = [(s.id, self.frame(s)) for s in released]
            tx.after_commit(lambda: self._publish(frames))
        if released:
            log.info("marked %d v1 worker(s) of gone instances disconnected", len(released))
        return len(released)

    async def _reclaim(self, tx: Tx, me: str) -> list[SessionRecord]:
        """The sockets still open here, marked connected again where another instance released them."""
        reclaimed = []
        for body in tuple(self.held()):
            session = await tx.sessions.get(body)
            if session is not None and session.worker_status != "connected" and session.worker_instance is None:
                await tx.sessions.update(session.id, worker_status="connected", worker_instance=me)
                reclaimed.append(replace(session, worker_status="connected", worker_instance=me))
        return reclaimed

    def _publish(self, frames: Sequence[tuple[str, Live]]) -> None:
        for body, frame in frames:
            self.hub.publish_frames(body, [frame])

    async def set(self, body: str, status: str) -> None:
        """A socket of the session opened (``connected``: held here) or the last one here closed
        (``disconnected``: unless another instance holds a newer one)."""
        me = self.instance
        async with self.store.write() as tx:
            session = await tx.sessions.get(body)
            if session is None:
                return
            if status != "connected" and session.worker_instance not in (None, me):
                return  # the worker reconnected to another instance meanwhile: it is connected there
            t = now()
            owner = me if status == "connected" else None
            await tx.sessions.update(session.id, worker_status=status, worker_last_seen=t, worker_instance=owner)
            frame = self.frame(replace(session, worker_status=status, worker_last_seen=t, worker_instance=owner))
            tx.after_commit(lambda: self.hub.publish_frames(body, [frame]))
