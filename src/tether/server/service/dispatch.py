"""Work dispatch: the queue of work items, long polls, leases and re-dispatch (docs/protocol.md §4.1).

The lease rules are :mod:`tether.protocol.leases`: SQL selects the candidates, the rules decide
which item a poll delivers, what an ack or heartbeat does and which lease has lapsed, and this
module writes their answer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from tether.errors import AuthenticationFailed, Conflict, Gone, NotFound
from tether.protocol import leases
from tether.protocol.access import LIVE_WORK_STATES, NO_SUCCESSOR, WorkVerdict, work_verdict
from tether.protocol.ids import WorkId, new_id
from tether.protocol.runner_policy import secret_fields
from tether.protocol.work_secret import WorkSecret, encode_work_secret
from tether.server.auth.service import Auth
from tether.server.auth.worker_jwt import WorkerClaims
from tether.server.broker import WORK_QUEUED, Broker, ServerClosing, work_topic
from tether.server.clock import now
from tether.server.config import Config
from tether.server.store import Store, Tx
from tether.server.store.records import EnvironmentRecord, SessionRecord, WorkItem
from tether.server.streams import CLOSE_UNAUTHORIZED, OpenStreams, work_key

__all__ = ["MAX_CACHED_WORK", "Dispatcher"]

log = logging.getLogger("tether.server.dispatch")


MAX_CACHED_WORK = 100_000


class Dispatcher:
    def __init__(self, config: Config, store: Store, broker: Broker, auth: Auth,
                 streams: OpenStreams | None = None) -> None:
        self.config = config
        self.store = store
        self.broker = broker
        self.auth = auth
        self.streams = streams or OpenStreams()
        # work id → state, for the worker-token check on every worker write. On SQLite only this
        # process moves an item out of a live state (after_commit below keeps this current), and
        # an ended state is final, so a cached entry is never stale. On PostgreSQL another
        # instance may end an item at any time: only ended states are cached there, and a live
        # one is read from the database at each check.
        self.work_states: dict[str, str] = {}
        self.cache_live_work = store.is_sqlite
        # set when the service is built: settles what a departed worker left pending (permission
        # prompts) and gives the session back as it is then
        self.on_worker_gone: Callable[[Tx, SessionRecord, str], Awaitable[SessionRecord]] | None = None

    async def worker_gone(self, tx: Tx, session: SessionRecord | None, reason: str) -> SessionRecord | None:
        if session is not None and self.on_worker_gone is not None:
            return await self.on_worker_gone(tx, session, reason)
        return session

    def uses_v2(self, session: SessionRecord) -> bool:
        return session.kind == "code" or self.config.worker_transport == "v2"

    async def queue_work(self, tx: Tx, session: SessionRecord) -> WorkItem | None:
        """Queue a work item for ``session`` on its environment, superseding any live one."""
        env_id = session.environment_id
        if not env_id or session.archived_at:
            return None
        t = now()
        await self.supersede(tx, session.id)
        tx.queued_work_for.add(session.id)
        work_id = WorkId(new_id("work"))
        assert self.auth.keys is not None
        token, claims = self.auth.keys.mint(
            session_body=session.id, org_id=session.org_id, environment_id=env_id,
            epoch=session.worker_epoch, work_id=work_id, now=t, ttl=self.config.worker_token_ttl_s,
        )
        sources, extras = secret_fields(session.session_context)
        auth = (session.internal_metadata or {}).get("_runner_auth") or []  # S1 `auth`, never in S2
        secret = WorkSecret(session_ingress_token=token, api_base_url=self.config.url,
                            use_code_sessions=self.uses_v2(session), sources=sources, auth=auth, extra=extras)
        item = WorkItem(id=work_id, org_id=session.org_id, environment_id=env_id, session_id=session.id,
                        kind="session", state="queued", secret=encode_work_secret(secret), token_jti=claims.jti,
                        created_at=t, delivered_at=None, acked_at=None, last_heartbeat_at=None,
                        lease_expires_at=None)
        await tx.work.insert(item)
        tx.after_commit(lambda: self._wake(env_id))
        return item

    def _wake(self, env_id: str) -> None:
        self.broker.publish(work_topic(env_id), WORK_QUEUED)

    async def ensure_worker(self, tx: Tx, session: SessionRecord) -> None:
        """Queue work when a session bound to an environment has no live work item."""
        if session.environment_id and not session.archived_at:
            if await tx.work.live_for_session(session.id) is None:
                await self.queue_work(tx, session)

    async def poll(self, env: EnvironmentRecord, reclaim_older_than_ms: int) -> tuple[WorkItem, bool] | None:
        """Long poll: the next work item and whether its session speaks v2, or None after
        ``poll_timeout_s``."""
        deadline = asyncio.get_running_loop().time() + self.config.poll_timeout_s
        with self.broker.subscribe(work_topic(env.id), maxsize=16) as sub:
            while True:
                item = await self._take_work(env, reclaim_older_than_ms / 1000.0)
                if item is not None:
                    return item
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    if isinstance(await sub.get(timeout=remaining), ServerClosing):
                        return None
                sub.reset()

    async def _take_work(self, env: EnvironmentRecord, reclaim_s: float) -> tuple[WorkItem, bool] | None:
        t = now()
        async with self.store.read() as rtx:
            candidate = await rtx.work.next_candidate(env.id, t - reclaim_s)
        if candidate is None:
            return None
        async with self.store.write() as tx:
            item = await tx.work.get(candidate.id)
            if item is None or not leases.deliverable(_lease(item), t, reclaim_s):
                return None  # another poll took it meanwhile
            # A long poll was authenticated when it began. If the environment was registered again
            # since (another bridge re-attached it, docs/protocol.md §4.1 E1), its secret is no longer
            # this poll's: the new bridge's poll takes the item, not the replaced one's (read after
            # the item, so that an item queued after the re-registration always sees the new secret).
            current = await tx.environments.get(env.id)
            if current is None or current.secret_hash != env.secret_hash:
                raise AuthenticationFailed("The environment secret is not recognised (the environment was "
                                           "registered again).")
            item = await _write_lease(tx, item, leases.deliver(_lease(item), t, self.config.lease_ttl_s))
            session = await tx.sessions.get(item.session_id)
        return item, session is not None and self.uses_v2(session)

    async def live_work(self, env_id: str, work_id: str, session_body: str) -> WorkItem:
        async with self.store.read() as tx:
            item = await tx.work.get(work_id)
        if item is None or item.environment_id != env_id or item.session_id != session_body:
            raise NotFound("No such work item.")
        if item.state in ("stopped", "superseded"):
            raise Gone(f"Work item {work_id} is {item.state}.", error_type="work_gone")
        return item

    async def ack(self, item: WorkItem) -> None:
        t = now()
        async with self.store.write() as tx:
            current = await tx.work.get(item.id) or item
            acked = _apply(leases.ack, _lease(current), t, self.config.lease_ttl_s)
            await _write_lease(tx, current, acked, acked_at=t, last_heartbeat_at=t)

    async def heartbeat(self, item: WorkItem) -> tuple[leases.Lease, float]:
        """E5: the lease as extended, and when."""
        t = now()
        async with self.store.write() as tx:
            current = await tx.work.get(item.id) or item
            beat = _apply(leases.heartbeat, _lease(current), t, self.config.lease_ttl_s)
            await _write_lease(tx, current, beat, last_heartbeat_at=t)
            # A bridge at capacity polls rarely (600 s) but heartbeats its work: that is
            # liveness too, for the online dot and for environment expiry.
            await tx.environments.update(item.environment_id, last_poll_at=t)
        return beat, t

    async def stop(self, tx: Tx, item: WorkItem, force: bool) -> None:
        await self.end_work(tx, item, "stopped")
        session = await self.worker_gone(tx, await tx.sessions.get(item.session_id, for_update=True),
                                         "work_stopped")
        if force:
            return
        if session and not session.archived_at and await tx.events.has_undelivered_inbound(session.id):
            await self.queue_work(tx, session)

    # ---- ending work, and what a worker token may still do -------------------------------------
    async def end_work(self, tx: Tx, item: WorkItem, state: str) -> None:
        """Move a work item to ``stopped``/``superseded`` (every such move goes through here)."""
        ended = _apply(leases.stop if state == "stopped" else leases.supersede, _lease(item))
        await _write_lease(tx, item, ended)
        self._ended(tx, [item.id], item.session_id, state)

    async def supersede(self, tx: Tx, session_id: str, *, close_streams: bool = True) -> None:
        """``close_streams=False``: the caller closes them itself (archive: 4001)."""
        ended: list[str] = []
        for item in await tx.work.live_of_session(session_id):
            await _write_lease(tx, item, leases.supersede(_lease(item)))
            ended.append(item.id)
        self._ended(tx, ended, session_id, "superseded", close_streams)

    def _ended(self, tx: Tx, work_ids: list[str], session_id: str, state: str, close_streams: bool = True) -> None:
        if work_ids and not tx.ended_work:
            tx.after_commit(lambda: self._after_work_ended(tx))
        for work_id in work_ids:
            tx.ended_work[work_id] = (session_id, state, close_streams)

    def _after_work_ended(self, tx: Tx) -> None:
        """Committed: remember the final states; a worker whose item ended with no successor
        is gone, so its open sockets and streams close now (4003) rather than at their next
        write. One with a successor keeps reading: its bridge adopts the new token."""
        self._trim_cache()
        for work_id, (session_id, state, close_streams) in tx.ended_work.items():
            self.work_states[work_id] = state
            if close_streams and session_id not in tx.queued_work_for:
                self.streams.close_key(work_key(work_id), CLOSE_UNAUTHORIZED, f"work {work_id} is {state}")

    def _trim_cache(self) -> None:
        if len(self.work_states) >= MAX_CACHED_WORK:
            self.work_states.clear()

    async def work_access(self, claims: WorkerClaims) -> WorkVerdict:
        """What the token's work item allows now. A token without one (env-less v2) is
        governed by epochs alone. Cached: a dictionary look-up on the write path (on PostgreSQL
        a live item is read each time: see ``work_states``)."""
        work_id = claims.work_id
        if work_id is None:
            return "live"
        state = self.work_states.get(work_id)
        if state is None:
            async with self.store.read() as tx:
                item = await tx.work.get(work_id)
            state = item.state if item is not None and item.session_id == claims.session_body else "missing"
            if self.cache_live_work or state not in LIVE_WORK_STATES:
                self._trim_cache()
                self.work_states[work_id] = state
        if state in LIVE_WORK_STATES:
            return "live"
        async with self.store.read() as tx:
            successor = await tx.work.live_for_session(claims.session_body)
        acked_at = NO_SUCCESSOR if successor is None else successor.acked_at
        return work_verdict(state, successor_acked_at=acked_at, now=now(),
                            handover_s=self.config.worker_handover_s)

    async def check_worker_write(self, claims: WorkerClaims) -> None:
        """Worker writes need live work (docs/protocol.md §4.1, §4.4): a replaced token gets
        401 (its writer keeps the events for the new token), a gone one 410 ``work_gone``,
        an archived session 409 ``already_archived`` as before. A token being handed over
        to a re-dispatched item still writes (tether.protocol.access)."""
        verdict = await self.work_access(claims)
        if verdict == "live":
            return
        await self._refuse_if_archived(claims.session_body)
        if verdict == "replaced":
            raise AuthenticationFailed(f"Work {claims.work_id} was re-dispatched: this worker token was "
                                       "replaced by the new work item's token.")
        raise Gone(f"Work {claims.work_id} was stopped: this worker token no longer writes to the session.",
                   error_type="work_gone")

    async def check_worker_read(self, claims: WorkerClaims) -> None:
        """Reads (streams, GETs) stay open to a replaced token until its bridge adopts the new one.
        An archived session reads as not found (404, socket 4001), as before."""
        if await self.work_access(claims) == "gone":
            await self._refuse_if_archived(claims.session_body, read=True)
            raise Gone(f"Work {claims.work_id} was stopped: this worker token no longer reads the session.",
                       error_type="work_gone")

    async def _refuse_if_archived(self, session_id: str, *, read: bool = False) -> None:
        async with self.store.read() as tx:
            session = await tx.sessions.get(session_id)
        if session is not None and session.archived_at:
            if read:
                raise NotFound("The session is archived.")
            raise Conflict("The session is archived.", error_type="already_archived")

    async def reap_lapsed_leases(self) -> int:
        """Re-dispatch sessions whose worker stopped acking/heartbeating (lease TTL)."""
        t = now()
        async with self.store.read() as rtx:
            lapsed = await rtx.work.lapsed(t)
        count = 0
        for candidate in lapsed:
            async with self.store.write() as tx:
                item = await tx.work.get(candidate.id)
                if item is None or not leases.lease_expired(_lease(item), t):
                    continue  # acked or heartbeating meanwhile, or ended
                await self.end_work(tx, item, "stopped")
                session = await self.worker_gone(tx, await tx.sessions.get(item.session_id, for_update=True),
                                                 "lease_lapsed")
                if session and not session.archived_at:
                    log.info("lease lapsed for %s; re-dispatching session %s", item.id, item.session_id)
                    await self.queue_work(tx, session)
                    count += 1
        return count

    async def run_reaper(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_check_interval_s)
            try:
                await self.reap_lapsed_leases()
            except Exception:  # the reaper must outlive one bad pass
                log.exception("lease reaper pass failed")


def _lease(item: WorkItem) -> leases.Lease:
    return leases.Lease(item.id, item.state, item.delivered_at, item.lease_expires_at)


async def _write_lease(tx: Tx, item: WorkItem, lease: leases.Lease, *, acked_at: float | None = None,
                       last_heartbeat_at: float | None = None) -> WorkItem:
    """Write what a lease rule answered (and when the item was acked or heard of); the item now."""
    item = replace(item, state=lease.state, delivered_at=lease.delivered_at, lease_expires_at=lease.lease_expires_at,
                   acked_at=item.acked_at if acked_at is None else acked_at,
                   last_heartbeat_at=item.last_heartbeat_at if last_heartbeat_at is None else last_heartbeat_at)
    await tx.work.update(item.id, state=item.state, delivered_at=item.delivered_at,
                         lease_expires_at=item.lease_expires_at, acked_at=item.acked_at,
                         last_heartbeat_at=item.last_heartbeat_at)
    return item


def _apply(rule: Callable[..., leases.Lease], lease: leases.Lease, *args: float) -> leases.Lease:
    """A lease rule's answer; a move it refuses is the caller's conflict (410 for ended work)."""
    try:
        return rule(lease, *args)
    except leases.LeaseGone as exc:
        raise Gone(f"{exc}.", error_type="work_gone") from None
    except leases.LeaseStateError as exc:
        raise Conflict(f"{exc}.") from None
