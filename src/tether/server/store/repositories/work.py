"""Work items: what a poll hands a bridge (docs/protocol.md §4.1). SQL selects candidates; the lease
rules (``tether.protocol.leases``, applied by ``service/dispatch.py``) decide."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Final

import sqlalchemy as sa

from tether.protocol.access import LIVE_WORK_STATES
from tether.protocol.ids import WorkId
from tether.server.store import tables as t
from tether.server.store.records import WorkItem
from tether.server.store.repositories.base import Repository, row_of

__all__ = ["WorkItems"]

_LIVE: Final = tuple(sorted(LIVE_WORK_STATES))
w = t.work_items
_GET = sa.select(w).where(w.c.id == sa.bindparam("id"))
_GET_FOR_UPDATE = _GET.with_for_update()
_SESSION_OF = sa.select(w.c.session_id).where(w.c.id == sa.bindparam("id"))  # never changes: no lock needed
_LOCK_SESSION = sa.select(t.sessions.c.id).where(t.sessions.c.id == sa.bindparam("id")).with_for_update()


class WorkItems(Repository):
    async def insert(self, item: WorkItem) -> None:
        await self.conn.execute(w.insert(), row_of(item))

    async def get(self, work_id: str) -> WorkItem | None:
        """The item. A PostgreSQL write transaction locks it, its session's row first (the one lock
        order, repositories/base.py): two polls for one item, on any instances, cannot both
        deliver it, nor a heartbeat extend a lease a stop just ended."""
        if not self.locks:
            return await self._one(WorkItem, _GET, {"id": work_id})
        session_id = (await self.conn.execute(_SESSION_OF, {"id": work_id})).scalar()
        if session_id is None:
            return None
        await self.conn.execute(_LOCK_SESSION, {"id": session_id})
        self.session_locked(session_id)
        return await self._one(WorkItem, _GET_FOR_UPDATE, {"id": work_id})

    async def update(self, work_id: WorkId, **values: Any) -> None:
        await self._update(w, {"id": work_id}, values)

    async def live_for_session(self, session_id: str) -> WorkItem | None:
        """The session's newest live item (queued, delivered or acked)."""
        return await self._one(WorkItem, sa.select(w).where(w.c.session_id == session_id, w.c.state.in_(_LIVE))
                               .order_by(w.c.created_at.desc()).limit(1))

    async def live_of_session(self, session_id: str) -> list[WorkItem]:
        return await self._all(WorkItem, sa.select(w).where(w.c.session_id == session_id, w.c.state.in_(_LIVE)))

    async def next_candidate(self, env_id: str, reclaim_before: float) -> WorkItem | None:
        """The oldest queued item, or a delivered one never acked since ``reclaim_before``."""
        return await self._one(WorkItem, sa.select(w).where(
            w.c.environment_id == env_id,
            sa.or_(w.c.state == "queued", sa.and_(w.c.state == "delivered", w.c.delivered_at < reclaim_before)),
        ).order_by(w.c.created_at).limit(1))

    async def of_environment(self, env_id: str, states: Iterable[str]) -> list[WorkItem]:
        return await self._all(WorkItem, sa.select(w).where(w.c.environment_id == env_id,
                                                            w.c.state.in_(tuple(states))))

    async def lapsed(self, now: float) -> list[WorkItem]:
        """Candidates whose lease deadline passed."""
        return await self._all(WorkItem, sa.select(w).where(
            w.c.state.in_(("delivered", "acked")), w.c.lease_expires_at.is_not(None), w.c.lease_expires_at < now))

    async def active_counts(self, env_ids: Sequence[str]) -> dict[str, int]:
        """Delivered or acked items per environment: its active sessions."""
        if not env_ids:
            return {}
        stmt = (sa.select(w.c.environment_id, sa.func.count())
                .where(w.c.environment_id.in_(env_ids), w.c.state.in_(("delivered", "acked")))
                .group_by(w.c.environment_id))
        return {r[0]: int(r[1]) for r in (await self.conn.execute(stmt)).all()}
