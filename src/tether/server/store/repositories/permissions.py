"""Permission requests (docs/protocol.md §4.6): the rows; their states move by
``tether.protocol.permissions``' table."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tether.server.store import tables as t
from tether.server.store.records import PermissionRecord
from tether.server.store.repositories.base import Repository

__all__ = ["Permissions"]

p = t.permission_requests


class Permissions(Repository):
    async def insert(self, **row: Any) -> None:
        """A new pending request (a request id already recorded for the session is kept as it is)."""
        if await self.get(row["session_id"], row["request_id"]) is None:
            await self.conn.execute(p.insert(), row)

    async def get(self, session_id: str, request_id: str) -> PermissionRecord | None:
        """The request. A PostgreSQL write transaction locks it (its callers hold the session's
        lock already): of two answers, the second reads the first's and is refused."""
        stmt = sa.select(p).where(p.c.session_id == session_id, p.c.request_id == request_id)
        return await self._one(PermissionRecord, stmt.with_for_update() if self.locks else stmt)

    async def update(self, session_id: str, request_id: str, **values: Any) -> None:
        await self._update(p, {"session_id": session_id, "request_id": request_id}, values)

    async def of_session(self, session_id: str, status: str | None = None) -> list[PermissionRecord]:
        stmt = sa.select(p).where(p.c.session_id == session_id)
        if status is not None:
            stmt = stmt.where(p.c.status == status)
        return await self._all(PermissionRecord, stmt.order_by(p.c.pk))

    async def pending_count(self, session_id: str) -> int:
        stmt = sa.select(sa.func.count()).where(p.c.session_id == session_id, p.c.status == "pending")
        return int((await self.conn.execute(stmt)).scalar_one())

    async def expire_pending(self, session_id: str, now: float) -> list[PermissionRecord]:
        """Every pending request becomes ``expired`` (answered by the server); those it was."""
        rows = await self.of_session(session_id, "pending")
        if rows:
            await self.conn.execute(p.update().where(p.c.session_id == session_id, p.c.status == "pending")
                                    .values(status="expired", answered_at=now, answered_by="server"))
        return rows
