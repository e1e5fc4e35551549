"""Environments (E1–E7, docs/protocol.md §4.1): registration, liveness and expiry, and what an
environment's owner does to its work. The lease rules are ``dispatch.py``'s."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tether.errors import Gone, NotFound
from tether.protocol.ids import new_id
from tether.protocol.leases import environment_expired
from tether.server.auth.secrets import hash_secret, new_secret
from tether.server.auth.service import Principal
from tether.server.clock import now
from tether.server.config import Config
from tether.server.service.dispatch import Dispatcher
from tether.server.store import Store

__all__ = ["Environments"]


class Environments:
    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher

    def _expired(self, env: dict[str, Any], at: float) -> bool:
        return env["state"] == "expired" or environment_expired(env["last_poll_at"] or env["created_at"], at,
                                                                 self.config.environment_ttl_s)

    async def register(self, principal: Principal, fields: Mapping[str, Any], wanted: str | None) -> tuple[str, str]:
        """E1: idempotent on ``environment_id``: a live id of the caller's org is re-attached (same
        id back), anything else gets a fresh one. The id and its new secret."""
        secret = new_secret("environment")
        t = now()
        async with self.store.write() as tx:
            env = await tx.get_environment(wanted) if wanted else None
            reattach = env is not None and env["org_id"] == principal.org_id and not self._expired(env, t)
            if reattach and wanted is not None:
                env_id = wanted
                await tx.update_environment(env_id, **fields, secret_hash=hash_secret(secret), state="active",
                                            last_poll_at=t, user_id=principal.user_id)
            else:
                env_id = new_id("env")
                await tx.insert_environment(id=env_id, org_id=principal.org_id, user_id=principal.user_id,
                                            secret_hash=hash_secret(secret), state="active",
                                            last_poll_at=t, created_at=t, **fields)
            await tx.insert_audit(principal.org_id, principal.user_id, "environment.register", env_id,
                                  {"reattached": reattach, "machine_name": fields["machine_name"]}, t)
        return env_id, secret

    async def polled(self, env: dict[str, Any]) -> None:
        """E2 begins: the poll proves the environment alive; one silent for too long has expired
        (410). The long poll itself is the dispatcher's."""
        t = now()
        if env["state"] == "deregistered":
            raise NotFound("The environment was deregistered; register again.")
        expired = self._expired(env, t)
        async with self.store.write() as tx:
            await tx.update_environment(env["id"], **({"state": "expired"} if expired else {"last_poll_at": t}))
        if expired:
            raise Gone("The environment expired after a long time without polling; register again.")

    async def own(self, principal: Principal, env_id: str) -> dict[str, Any]:
        """The caller's organisation's environment (404 first: no existence oracle), for a writer."""
        async with self.store.read() as tx:
            env = await tx.get_environment(env_id)
        if env is None or env["org_id"] != principal.org_id:
            raise NotFound("No such environment.")
        principal.require_writer()
        return env

    async def stop_work(self, env_id: str, work_id: str, force: bool) -> None:
        """E4: end the item; without ``force`` a session with undelivered input is queued again."""
        async with self.store.write() as tx:
            row = await tx.get_work(work_id)
            if row is None or row["environment_id"] != env_id:
                raise NotFound("No such work item.")
            if row["state"] not in ("stopped", "superseded"):
                await self.dispatcher.stop(tx, row, force)

    async def deregister(self, principal: Principal, env_id: str) -> None:
        """E6: every live item stops, the worker of each is gone, the environment goes offline."""
        async with self.store.write() as tx:
            for row in await tx.work_of_environment(env_id, ("queued", "delivered", "acked")):
                await self.dispatcher.end_work(tx, row, "stopped")
                session = await tx.get_session(row["session_id"], for_update=True)
                await self.dispatcher.worker_gone(tx, session, "environment_deregistered")
            await tx.update_environment(env_id, state="deregistered")
            await tx.insert_audit(principal.org_id, principal.user_id, "environment.deregister", env_id, None, now())

    async def reconnect(self, principal: Principal, env_id: str, body: str) -> None:
        """E7: queue the session on this environment again."""
        async with self.store.write() as tx:
            session = await tx.get_session(body, for_update=True)
            if session is None or session["org_id"] != principal.org_id or session["environment_id"] != env_id:
                raise NotFound("No such session on this environment.")
            if session["archived_at"]:
                raise NotFound("The session is archived.")
            await self.dispatcher.queue_work(tx, session)
            await tx.update_environment(env_id, state="active")

    async def of_org(self, org_id: str, *, show_all: bool) -> list[tuple[dict[str, Any], int]]:
        """The organisation's environments with their active session counts (deregistered ones are
        history: ``show_all`` lists them too)."""
        async with self.store.read() as tx:
            envs = [e for e in await tx.list_environments(org_id) if show_all or e["state"] != "deregistered"]
            counts = await tx.active_session_counts([e["id"] for e in envs])
        return [(env, counts.get(env["id"], 0)) for env in envs]
