"""Organisations, users, credentials and signing keys."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from tether.errors import Conflict
from tether.protocol.ids import new_id
from tether.server.store import tables as t
from tether.server.store.records import MemberRecord, OrgRecord, SigningKey, TokenRecord, UserRecord
from tether.server.store.repositories.base import Repository, row_of

__all__ = ["Keys", "Orgs", "Tokens", "Users"]

_GET_ORG = sa.select(t.orgs).where(t.orgs.c.id == sa.bindparam("id"))
_GET_USER = sa.select(t.users).where(t.users.c.id == sa.bindparam("id"))
_TOKEN_BY_HASH = sa.select(t.tokens).where(t.tokens.c.secret_hash == sa.bindparam("h"))
# a credential with its user and organisation (NULLs where they are gone): one statement, not three
_USER_COLS = [c.label(f"u_{c.name}") for c in t.users.c]
_ORG_COLS = [c.label(f"o_{c.name}") for c in t.orgs.c]
_CREDENTIAL_BY_HASH = (
    sa.select(t.tokens, *_USER_COLS, *_ORG_COLS)
    .select_from(t.tokens.outerjoin(t.users, t.users.c.id == t.tokens.c.user_id)
                 .outerjoin(t.orgs, t.orgs.c.id == t.users.c.org_id))
    .where(t.tokens.c.secret_hash == sa.bindparam("h")))
_TOKEN_FIELDS = [c.name for c in t.tokens.c]
_USER_FIELDS = [(c.name, f"u_{c.name}") for c in t.users.c]
_ORG_FIELDS = [(c.name, f"o_{c.name}") for c in t.orgs.c]
_TOKEN_BY_HASH_LOCKED = _TOKEN_BY_HASH.with_for_update()


class Orgs(Repository):
    async def get(self, org_id: str) -> OrgRecord | None:
        return await self._one(OrgRecord, _GET_ORG, {"id": org_id})

    async def by_name(self, name: str) -> OrgRecord | None:
        return await self._one(OrgRecord, sa.select(t.orgs).where(t.orgs.c.name == name))

    async def first(self) -> OrgRecord | None:
        return await self._one(OrgRecord, sa.select(t.orgs).order_by(t.orgs.c.created_at).limit(1))

    async def insert(self, name: str, now: float) -> OrgRecord:
        org = OrgRecord(new_id("org"), name, True, now)
        await self.conn.execute(t.orgs.insert(), row_of(org))
        return org

    async def set_policy(self, org_id: str, allow_remote_control: bool) -> None:
        await self._update(t.orgs, {"id": org_id}, {"allow_remote_control": allow_remote_control})


class Users(Repository):
    async def get(self, user_id: str) -> UserRecord | None:
        return await self._one(UserRecord, _GET_USER, {"id": user_id})

    async def by_email(self, email: str) -> UserRecord | None:
        return await self._one(UserRecord, sa.select(t.users).where(t.users.c.email == email))

    async def of_org(self, org_id: str) -> list[UserRecord]:
        return await self._all(UserRecord, sa.select(t.users).where(t.users.c.org_id == org_id)
                               .order_by(t.users.c.created_at))

    async def everyone(self) -> list[MemberRecord]:
        """Every user with its organisation's name, oldest first."""
        return await self._all(MemberRecord, sa.select(
            t.users.c.id, t.users.c.email, t.users.c.role, t.orgs.c.name.label("org"))
            .join(t.orgs, t.orgs.c.id == t.users.c.org_id).order_by(t.users.c.created_at))

    async def insert(self, org_id: str, email: str, role: str, now: float) -> UserRecord:
        """A new user; :class:`Conflict` when the email has an account (checked first by the caller,
        but on PostgreSQL another instance may insert it between that check and this insert)."""
        user = UserRecord(new_id("user"), org_id, email, role, None, now)
        try:
            await self.conn.execute(t.users.insert(), row_of(user))
        except sa.exc.IntegrityError:
            raise Conflict("A person with that email already has an account.") from None
        return user

    async def update(self, user_id: str, **values: Any) -> None:
        await self._update(t.users, {"id": user_id}, values)


class Tokens(Repository):
    async def insert(self, *, kind: str, secret_hash: str, org_id: str | None, user_id: str | None,
                     name: str | None, expires_at: float | None, created_at: float,
                     extra: dict[str, Any] | None = None, lookup: str | None = None) -> TokenRecord:
        token = TokenRecord(new_id("tok"), kind, secret_hash, org_id, user_id, name, expires_at, False, created_at,
                            None, extra, lookup)
        await self.conn.execute(t.tokens.insert(), row_of(token))
        return token

    # A PostgreSQL write transaction locks the token it reads (repositories/base.py): a login
    # link, a device code, a refresh token is used once, whichever instance two uses reach.
    async def by_hash(self, secret_hash: str) -> TokenRecord | None:
        return await self._one(TokenRecord, _TOKEN_BY_HASH_LOCKED if self.locks else _TOKEN_BY_HASH,
                               {"h": secret_hash})

    async def credential(self, secret_hash: str) -> tuple[TokenRecord, UserRecord | None, OrgRecord | None] | None:
        """The token of ``secret_hash`` with its user and that user's organisation (None where
        gone), read in one statement: checking a credential is on every request's path. (SQLite
        reads it with ``sqlite_fast.credential`` on ``Store.sqlite_statement``: ``Auth.principal``.)"""
        found = (await self.conn.execute(_CREDENTIAL_BY_HASH, {"h": secret_hash})).first()
        if found is None:
            return None
        row = found._mapping
        token = TokenRecord(**{name: row[name] for name in _TOKEN_FIELDS})
        user = None if row["u_id"] is None else UserRecord(**{name: row[label] for name, label in _USER_FIELDS})
        org = None if row["o_id"] is None else OrgRecord(**{name: row[label] for name, label in _ORG_FIELDS})
        return token, user, org

    async def by_lookup(self, kind: str, lookup: str) -> TokenRecord | None:
        return await self._one(TokenRecord, self._locking(sa.select(t.tokens).where(t.tokens.c.kind == kind,
                                                                                    t.tokens.c.lookup == lookup)))

    async def get(self, token_id: str) -> TokenRecord | None:
        return await self._one(TokenRecord, self._locking(sa.select(t.tokens).where(t.tokens.c.id == token_id)))

    def _locking(self, stmt: sa.Select[Any]) -> sa.Select[Any]:
        return stmt.with_for_update() if self.locks else stmt

    async def update(self, token_id: str, **values: Any) -> None:
        await self._update(t.tokens, {"id": token_id}, values)

    async def revoke_family(self, family: str) -> list[str]:
        """Revoke every access and refresh token of a login; their ids."""
        rows = (await self.conn.execute(sa.select(t.tokens.c.id, t.tokens.c.extra).where(
            t.tokens.c.kind.in_(("access", "refresh"))))).all()
        ids = [r[0] for r in rows if (r[1] or {}).get("family") == family]
        if ids:
            await self.conn.execute(t.tokens.update().where(t.tokens.c.id.in_(ids)).values(revoked=True))
        return ids

    async def of_user(self, user_id: str, kind: str) -> list[TokenRecord]:
        return await self._all(TokenRecord, sa.select(t.tokens).where(
            t.tokens.c.user_id == user_id, t.tokens.c.kind == kind).order_by(t.tokens.c.created_at))


class Keys(Repository):
    async def all(self) -> list[SigningKey]:
        return await self._all(SigningKey, sa.select(t.signing_keys).order_by(t.signing_keys.c.created_at))

    async def insert(self, kid: str, secret: str, now: float) -> None:
        """A new active key; the others stay to verify what they signed."""
        await self.conn.execute(t.signing_keys.update().values(active=False))
        await self.conn.execute(t.signing_keys.insert().values(kid=kid, secret=secret, active=True, created_at=now))

    async def delete(self, kid: str) -> None:
        await self.conn.execute(t.signing_keys.delete().where(t.signing_keys.c.kid == kid))
