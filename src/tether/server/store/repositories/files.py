"""Attachments and the audit log."""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa

from tether.server.store import sqlite_fast
from tether.server.store import tables as t
from tether.server.store.records import AuditEntry, FileRecord
from tether.server.store.repositories.base import Repository, row_of

__all__ = ["Audit", "Files"]

_INSERT_AUDIT = t.audit.insert()


class Files(Repository):
    async def insert(self, file: FileRecord) -> None:
        await self.conn.execute(t.files.insert(), row_of(file))

    async def get(self, file_id: str) -> FileRecord | None:
        return await self._one(FileRecord, sa.select(t.files).where(t.files.c.id == file_id))


class Audit(Repository):
    def __init__(self, conn: Any, raw: sqlite3.Connection | None = None) -> None:
        super().__init__(conn)
        self.raw = raw  # a SQLite write transaction's pysqlite connection: every prompt writes a row

    async def insert(self, org_id: str, actor: str, action: str, target: str | None,
                     detail: dict[str, Any] | None, now: float) -> None:
        if self.raw is not None:
            sqlite_fast.insert_audit(self.raw, (org_id, actor, action, target, detail, now))
            return
        await self.conn.execute(_INSERT_AUDIT, {"org_id": org_id, "actor": actor, "action": action,
                                                "target": target, "detail": detail, "at": now})

    async def of_org(self, org_id: str, limit: int, before_pk: int | None) -> list[AuditEntry]:
        """Newest first."""
        stmt = sa.select(t.audit).where(t.audit.c.org_id == org_id)
        if before_pk is not None:
            stmt = stmt.where(t.audit.c.pk < before_pk)
        return await self._all(AuditEntry, stmt.order_by(t.audit.c.pk.desc()).limit(limit))
