"""Server instances: one heartbeat row each (tether.protocol.instances decides who is alive)."""

from __future__ import annotations

import sqlalchemy as sa

from tether.server.store import tables as t
from tether.server.store.repositories.base import Repository

__all__ = ["Instances"]

_i = t.server_instances


class Instances(Repository):
    async def beat(self, instance_id: str, now: float, *, starting: bool) -> float | None:
        """Record that ``instance_id`` is alive now; its previous beat (None: its first). Only the
        instance itself writes its row (its id is its data directory's, held under server.lock)."""
        previous = (await self.conn.execute(sa.select(_i.c.last_seen).where(_i.c.id == instance_id))).scalar()
        if previous is None:
            await self.conn.execute(_i.insert().values(id=instance_id, started_at=now, last_seen=now))
        else:
            values = {"last_seen": now, **({"started_at": now} if starting else {})}
            await self.conn.execute(_i.update().where(_i.c.id == instance_id).values(**values))
        return float(previous) if previous is not None else None

    async def alive(self, since: float) -> set[str]:
        rows = await self.conn.execute(sa.select(_i.c.id).where(_i.c.last_seen >= since))
        return {r[0] for r in rows.all()}

    async def leave(self, instance_id: str) -> None:
        await self.conn.execute(_i.delete().where(_i.c.id == instance_id))

    async def forget_before(self, before: float) -> None:
        """Rows of instances gone long ago (a data directory that was removed)."""
        await self.conn.execute(_i.delete().where(_i.c.last_seen < before))
