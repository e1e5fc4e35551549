"""Work dispatch: the queue of work items, long polls, leases and re-dispatch (PROTOCOL.md §4.1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tether.errors import Gone, NotFound
from tether.protocol.ids import new_id
from tether.protocol.work_secret import WorkSecret, encode_work_secret
from tether.server.auth.service import Auth
from tether.server.broker import Broker, ServerClosing
from tether.server.clock import iso, now
from tether.server.config import Config
from tether.server.store import Store, Tx

log = logging.getLogger("tether.server.dispatch")


def work_topic(env_id: str) -> str:
    return f"w:{env_id}"


class Dispatcher:
    def __init__(self, config: Config, store: Store, broker: Broker, auth: Auth) -> None:
        self.config = config
        self.store = store
        self.broker = broker
        self.auth = auth
        # set by the hub: settles what a departed worker left pending (permission prompts)
        self.on_worker_gone: Callable[[Tx, dict[str, Any], str], Awaitable[object]] | None = None

    async def worker_gone(self, tx: Tx, session: dict[str, Any] | None, reason: str) -> None:
        if session is not None and self.on_worker_gone is not None:
            await self.on_worker_gone(tx, session, reason)

    def uses_v2(self, session: dict[str, Any]) -> bool:
        return session["kind"] == "code" or self.config.worker_transport == "v2"

    async def queue_work(self, tx: Tx, session: dict[str, Any]) -> dict[str, Any] | None:
        """Queue a work item for ``session`` on its environment, superseding any live one."""
        env_id = session.get("environment_id")
        if not env_id or session.get("archived_at"):
            return None
        t = now()
        await tx.supersede_work(session["id"])
        work_id = new_id("work")
        assert self.auth.keys is not None
        token, claims = self.auth.keys.mint(
            session_body=session["id"], org_id=session["org_id"], environment_id=env_id,
            epoch=int(session["worker_epoch"]), work_id=work_id, now=t, ttl=self.config.worker_token_ttl_s,
        )
        secret = WorkSecret(session_ingress_token=token, api_base_url=self.config.url,
                            use_code_sessions=self.uses_v2(session))
        row = await tx.insert_work(
            id=work_id, org_id=session["org_id"], environment_id=env_id, session_id=session["id"],
            kind="session", state="queued", secret=encode_work_secret(secret), token_jti=claims.jti,
            created_at=t,
        )
        tx.after_commit(lambda: self._wake(env_id))
        return row

    def _wake(self, env_id: str) -> None:
        self.broker.publish(work_topic(env_id), True)

    async def ensure_worker(self, tx: Tx, session: dict[str, Any]) -> None:
        """Queue work when a session bound to an environment has no live work item."""
        if session.get("environment_id") and not session.get("archived_at"):
            if await tx.live_work_for_session(session["id"]) is None:
                await self.queue_work(tx, session)

    def work_json(self, row: dict[str, Any], session_kind: str | None = None) -> dict[str, Any]:
        body = row["session_id"]
        v2 = session_kind == "code" or self.config.worker_transport == "v2"
        return {
            "id": row["id"],
            "type": "work",
            "environment_id": row["environment_id"],
            "state": row["state"],
            "data": {"type": row["kind"], "id": f"cse_{body}" if v2 else f"session_{body}"},
            "secret": row["secret"],
            "created_at": iso(row["created_at"]),
        }

    async def poll(self, env: dict[str, Any], reclaim_older_than_ms: int) -> dict[str, Any] | None:
        """Long poll: the next work item, or None after ``poll_timeout_s``."""
        deadline = asyncio.get_running_loop().time() + self.config.poll_timeout_s
        with self.broker.subscribe(work_topic(env["id"]), maxsize=16) as sub:
            while True:
                item = await self._take_work(env["id"], reclaim_older_than_ms)
                if item is not None:
                    return item
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    if isinstance(await sub.get(timeout=remaining), ServerClosing):
                        return None
                sub.reset()

    async def _take_work(self, env_id: str, reclaim_older_than_ms: int) -> dict[str, Any] | None:
        t = now()
        async with self.store.read() as rtx:
            candidate = await rtx.next_work(env_id, t, t - reclaim_older_than_ms / 1000.0)
        if candidate is None:
            return None
        async with self.store.write() as tx:
            row = await tx.get_work(candidate["id"])
            if row is None or row["state"] not in ("queued", "delivered"):
                return None
            session = await tx.get_session(row["session_id"])
            await tx.update_work(row["id"], state="delivered", delivered_at=t,
                                 lease_expires_at=t + self.config.lease_ttl_s)
            row.update(state="delivered", delivered_at=t)
        return self.work_json(row, session["kind"] if session else None)

    async def live_work(self, env_id: str, work_id: str, session_body: str) -> dict[str, Any]:
        async with self.store.read() as tx:
            row = await tx.get_work(work_id)
        if row is None or row["environment_id"] != env_id:
            raise NotFound("No such work item.")
        if row["session_id"] != session_body:
            raise NotFound("No such work item.")
        if row["state"] in ("stopped", "superseded"):
            raise Gone(f"Work item {work_id} is {row['state']}.", error_type="work_gone")
        return row

    async def ack(self, row: dict[str, Any]) -> None:
        t = now()
        async with self.store.write() as tx:
            await tx.update_work(row["id"], state="acked", acked_at=t, last_heartbeat_at=t,
                                 lease_expires_at=t + self.config.lease_ttl_s)

    async def heartbeat(self, row: dict[str, Any]) -> dict[str, Any]:
        t = now()
        state = "acked" if row["state"] in ("acked", "delivered") else row["state"]
        async with self.store.write() as tx:
            await tx.update_work(row["id"], state=state, last_heartbeat_at=t,
                                 lease_expires_at=t + self.config.lease_ttl_s)
            # A bridge at capacity polls rarely (600 s) but heartbeats its work: that is
            # liveness too, for the online dot and for environment expiry.
            await tx.update_environment(row["environment_id"], last_poll_at=t)
        return {"lease_extended": True, "state": state, "last_heartbeat": iso(t),
                "ttl_seconds": int(self.config.lease_ttl_s)}

    async def stop(self, tx: Tx, row: dict[str, Any], force: bool) -> None:
        await tx.update_work(row["id"], state="stopped", lease_expires_at=None)
        session = await tx.get_session(row["session_id"], for_update=True)
        await self.worker_gone(tx, session, "work_stopped")
        if force:
            return
        if session and not session["archived_at"] and await tx.has_undelivered_inbound(session["id"]):
            await self.queue_work(tx, session)

    async def reap_lapsed_leases(self) -> int:
        """Re-dispatch sessions whose worker stopped acking/heartbeating (lease TTL)."""
        t = now()
        async with self.store.read() as rtx:
            lapsed = await rtx.lapsed_work(t)
        count = 0
        for row in lapsed:
            async with self.store.write() as tx:
                current = await tx.get_work(row["id"])
                if current is None or current["state"] not in ("delivered", "acked"):
                    continue
                if (current["lease_expires_at"] or 0) >= t:
                    continue
                await tx.update_work(row["id"], state="stopped")
                session = await tx.get_session(row["session_id"], for_update=True)
                await self.worker_gone(tx, session, "lease_lapsed")
                if session and not session["archived_at"]:
                    log.info("lease lapsed for %s; re-dispatching session %s", row["id"], row["session_id"])
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
