"""Environments (E1–E7, docs/protocol.md §4.1): registration, liveness and expiry, and what an
environment's owner does to its work. The lease rules are ``dispatch.py``'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tether.errors import Gone, NotFound
from tether.protocol.ids import EnvironmentId, new_id
from tether.protocol.leases import environment_expired
from tether.server.auth.secrets import hash_secret, new_secret
from tether.server.auth.service import Principal
from tether.server.clock import now
from tether.server.config import Config
from tether.server.service.dispatch import Dispatcher
from tether.server.store import Store
from tether.server.store.records import EnvironmentRecord

__all__ = ["Environments", "Registration"]


@dataclass(frozen=True)
class Registration:
    """E1's fields, checked: what a bridge or runner says about itself."""

    kind: str  # bridge (a developer's machine) | cloud (a runner)
    machine_name: str
    directory: str
    branch: str | None
    git_repo_url: str | None
    max_sessions: int
    worker_type: str
    metadata: dict[str, Any]

    def columns(self) -> dict[str, Any]:
        return {"kind": self.kind, "machine_name": self.machine_name, "directory": self.directory,
                "branch": self.branch, "git_repo_url": self.git_repo_url, "max_sessions": self.max_sessions,
                "worker_type": self.worker_type, "metadata": self.metadata}


class Environments:
    def __init__(self, config: Config, store: Store, dispatcher: Dispatcher) -> None:
        self.config = config
        self.store = store
        self.dispatcher = dispatcher

    def _expired(self, env: EnvironmentRecord, at: float) -> bool:
        return env.state == "expired" or environment_expired(env.last_poll_at or env.created_at, at,
                                                              self.config.environment_ttl_s)

    async def register(self, principal: Principal, fields: Registration,
                       wanted: str | None) -> tuple[EnvironmentId, str]:
        """E1: idempotent on ``environment_id``: a live id of the caller's org is re-attached (same
        id back), anything else gets a fresh one. The id and its new secret."""
        secret = new_secret("environment")
        t = now()
        async with self.store.write() as tx:
            env = await tx.environments.get(wanted) if wanted else None
            reattach = env is not None and env.org_id == principal.org_id and not self._expired(env, t)
            if env is not None and reattach:
                env_id = env.id
                await tx.environments.update(env_id, **fields.columns(), secret_hash=hash_secret(secret),
                                             state="active", last_poll_at=t, user_id=principal.user_id)
            else:
                env_id = EnvironmentId(new_id("env"))
                await tx.environments.insert(EnvironmentRecord(
                    id=env_id, org_id=principal.org_id, user_id=principal.user_id, **fields.columns(),
                    secret_hash=hash_secret(secret), state="active", last_poll_at=t, created_at=t))
            await tx.audit.insert(principal.org_id, principal.user_id, "environment.register", env_id,
                                  {"reattached": reattach, "machine_name": fields.machine_name}, t)
        return env_id, secret

    async def polled(self, env: EnvironmentRecord) -> None:
        """E2 begins: the poll proves the environment alive; one silent for too long has expired
        (410). The long poll itself is the dispatcher's."""
        t = now()
        if env.state == "deregistered":
            raise NotFound("The environment was deregistered; register again.")
        expired = self._expired(env, t)
        async with self.store.write() as tx:
            await tx.environments.update(env.id, **({"state": "expired"} if expired else {"last_poll_at": t}))
        if expired:
            raise Gone("The environment expired after a long time without polling; register again.")

    async def own(self, principal: Principal, env_id: str) -> EnvironmentRecord:
        """The caller's organisation's environment (404 first: no existence oracle), for a writer."""
        async with self.store.read() as tx:
            env = await tx.environments.get(env_id)
        if env is None or env.org_id != principal.org_id:
            raise NotFound("No such environment.")
        principal.require_writer()
        return env

    async def stop_work(self, env: EnvironmentRecord, work_id: str, force: bool) -> None:
        """E4: end the item; without ``force`` a session with undelivered input is queued again."""
        async with self.store.write() as tx:
            item = await tx.work.get(work_id)
            if item is None or item.environment_id != env.id:
                raise NotFound("No such work item.")
            if item.state not in ("stopped", "superseded"):
                await self.dispatcher.stop(tx, item, force)

    async def deregister(self, principal: Principal, env: EnvironmentRecord) -> None:
        """E6: every live item stops, the worker of each is gone, the environment goes offline."""
        async with self.store.write() as tx:
            for item in await tx.work.of_environment(env.id, ("queued", "delivered", "acked")):
                await self.dispatcher.end_work(tx, item, "stopped")
                session = await tx.sessions.get(item.session_id, for_update=True)
                await self.dispatcher.worker_gone(tx, session, "environment_deregistered")
            await tx.environments.update(env.id, state="deregistered")
            await tx.audit.insert(principal.org_id, principal.user_id, "environment.deregister", env.id, None, now())

    async def reconnect(self, principal: Principal, env: EnvironmentRecord, body: str) -> None:
        """E7: queue the session on this environment again."""
        async with self.store.write() as tx:
            session = await tx.sessions.get(body, for_update=True)
            if session is None or session.org_id != principal.org_id or session.environment_id != env.id:
                raise NotFound("No such session on this environment.")
            if session.archived_at:
                raise NotFound("The session is archived.")
            await self.dispatcher.queue_work(tx, session)
            await tx.environments.update(env.id, state="active")

    async def of_org(self, org_id: str, *, show_all: bool) -> list[tuple[EnvironmentRecord, int]]:
        """The organisation's environments with their active session counts (deregistered ones are
        history: ``show_all`` lists them too)."""
        async with self.store.read() as tx:
            envs = [e for e in await tx.environments.of_org(org_id) if show_all or e.state != "deregistered"]
            counts = await tx.work.active_counts([e.id for e in envs])
        return [(env, counts.get(env.id, 0)) for env in envs]
