"""Environments: a registered bridge or runner."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tether.protocol.ids import EnvironmentId
from tether.server.store import tables as t
from tether.server.store.records import EnvironmentRecord
from tether.server.store.repositories.base import Repository, row_of

__all__ = ["Environments"]


class Environments(Repository):
    async def insert(self, env: EnvironmentRecord) -> None:
        await self.conn.execute(t.environments.insert(), row_of(env))

    async def get(self, env_id: str) -> EnvironmentRecord | None:
        return await self._one(EnvironmentRecord, sa.select(t.environments).where(t.environments.c.id == env_id))

    async def by_secret(self, secret_hash: str) -> EnvironmentRecord | None:
        return await self._one(EnvironmentRecord, sa.select(t.environments).where(
            t.environments.c.secret_hash == secret_hash))

    async def update(self, env_id: EnvironmentId, **values: Any) -> None:
        await self._update(t.environments, {"id": env_id}, values)

    async def of_org(self, org_id: str) -> list[EnvironmentRecord]:
        return await self._all(EnvironmentRecord, sa.select(t.environments).where(
            t.environments.c.org_id == org_id).order_by(t.environments.c.created_at))

    async def active(self) -> list[EnvironmentRecord]:
        """Registered environments of every organisation (``tether server status`` / ``stop``)."""
        return await self._all(EnvironmentRecord, sa.select(t.environments).where(
            t.environments.c.state == "active"))
