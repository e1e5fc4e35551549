"""Attachments (docs/protocol.md §3): a client uploads a file; people of its organisation, and the
worker of a session whose prompts attached it, download it."""

from __future__ import annotations

import uuid as uuidlib

from tether.errors import NotFound
from tether.server.auth.service import Principal
from tether.server.auth.worker_jwt import WorkerClaims
from tether.server.clock import now
from tether.server.store import Store
from tether.server.store.records import FileRecord

__all__ = ["Files"]


class Files:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def upload(self, principal: Principal, name: str, content_type: str, content: bytes) -> str:
        """The new file's id."""
        principal.require_writer()
        file_uuid = str(uuidlib.uuid4())
        async with self.store.write() as tx:
            await tx.files.insert(FileRecord(file_uuid, principal.org_id, principal.user_id, name, content_type,
                                             len(content), content, now()))
        return file_uuid

    async def for_user(self, principal: Principal, file_uuid: str) -> FileRecord:
        async with self.store.read() as tx:
            row = await tx.files.get(file_uuid)
        if row is None or row.org_id != principal.org_id:
            raise NotFound("No such file.")
        return row

    async def for_worker(self, claims: WorkerClaims, file_uuid: str) -> FileRecord:
        """The session host downloads attachments with the token it holds (docs/protocol.md §7.6)."""
        async with self.store.read() as tx:
            row = await tx.files.get(file_uuid)
            allowed = (row is not None and row.org_id == claims.org_id
                       and await tx.events.attaches_file(claims.session_body, file_uuid))
        if row is None or not allowed:
            raise NotFound("No such file.")
        return row
