"""The store's records are its tables' rows: one field per column, in column order (repositories build
them by column name, ``sqlite_fast`` by position), frozen and slotted."""

from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from tether.server.store import records as r
from tether.server.store import tables as t

ROWS = [(r.OrgRecord, t.orgs), (r.UserRecord, t.users), (r.TokenRecord, t.tokens), (r.SigningKey, t.signing_keys),
        (r.EnvironmentRecord, t.environments), (r.SessionRecord, t.sessions), (r.WorkItem, t.work_items),
        (r.PermissionRecord, t.permission_requests), (r.InternalEvent, t.internal_events), (r.FileRecord, t.files),
        (r.AuditEntry, t.audit)]


@pytest.mark.parametrize(("record", "table"), ROWS, ids=[table.name for _, table in ROWS])
def test_a_record_is_its_table_row(record: type, table: sa.Table) -> None:
    assert [f.name for f in dataclasses.fields(record)] == [c.name for c in table.c]
    params = record.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen and "__slots__" in record.__dict__


def test_a_token_names_its_login_family() -> None:
    token = r.TokenRecord("tok_1", "refresh", "h", "org", "user", None, None, False, 1.0, None, {"family": "f"}, None)
    assert token.family == "f"
    assert dataclasses.replace(token, extra=None).family is None
    assert dataclasses.replace(token, extra={"family": 3}).family is None
