"""Users, organisations, credentials: who is calling and what may they do (docs/protocol.md §1)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from sqlalchemy.exc import SQLAlchemyError

from tether.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    PolicyDenied,
)
from tether.protocol.access import credential_verdict
from tether.protocol.last_used import LastUsedThrottle
from tether.protocol.signing_keys import KeyChanges, active_kid, key_changes
from tether.server.auth import secrets as sec
from tether.server.auth.worker_jwt import KeyRing, WorkerClaims
from tether.server.config import Config
from tether.server.store import Store, Tx, sqlite_fast
from tether.server.store.records import EnvironmentRecord, OrgRecord, SigningKey, TokenRecord, UserRecord

log = logging.getLogger("tether.server.auth")

ROLES = ("owner", "member", "viewer")
USER_KINDS = ("access", "personal", "web_session")


def login_path(secret: str, next_path: str | None = None) -> str:
    """``/login?token=…`` (and ``&next=…``, already checked by the caller) for a login link."""
    query = {"token": secret, **({"next": next_path} if next_path else {})}
    return f"/login?{urlencode(query)}"


@dataclass(frozen=True)
class Principal:
    user_id: str
    org_id: str
    role: str
    email: str
    kind: str  # access | personal | web_session
    token_id: str
    allow_remote_control: bool

    @property
    def can_write(self) -> bool:
        return self.role in ("owner", "member")

    def require_writer(self) -> None:
        if not self.can_write:
            raise PermissionDenied("Viewers may watch sessions but not act on them.")

    def require_owner(self) -> None:
        if self.role != "owner":
            raise PermissionDenied("Only an organisation owner may do this.")

    def require_policy(self) -> None:
        if not self.allow_remote_control:
            raise PolicyDenied("Remote Control is disabled by your organisation's policy.")


@dataclass(frozen=True)
class IssuedToken:
    secret: str  # shown once; only its hash is stored
    row: TokenRecord


class Auth:
    def __init__(self, config: Config, store: Store) -> None:
        self.config = config
        self.store = store
        self.keys: KeyRing | None = None
        self.csrf_key = ""
        self.last_used = LastUsedThrottle()
        # set by server/context.py: close this instance's streams of a retired key; tell the
        # other instances that the keys changed (the bus, with --redis-url)
        self.on_retired: Callable[[frozenset[str]], object] | None = None
        self.announce: Callable[[], object] | None = None
        self._recheck = asyncio.Event()

    async def open(self) -> None:
        """Load (or create) the signing keys."""
        async with self.store.write() as tx:
            await tx.serialize("signing_keys")
            rows = await tx.keys.all()
            if not rows:
                kid, secret = KeyRing.new_key()
                await tx.keys.insert(kid, secret, time.time())
                rows = await tx.keys.all()
        self._load_keys(rows)

    def _load_keys(self, rows: list[SigningKey]) -> None:
        active = active_kid([(r.kid, r.active) for r in rows])
        self.keys = KeyRing({r.kid: r.secret for r in rows}, active, self.config.url)
        self.csrf_key = rows[0].secret

    async def rotate_keys(self) -> str:
        kid, secret = KeyRing.new_key()
        async with self.store.write() as tx:
            await tx.serialize("signing_keys")
            await tx.keys.insert(kid, secret, time.time())
            rows = await tx.keys.all()
        self._load_keys(rows)
        self._announce()
        return kid

    async def retire_key(self, kid: str) -> None:
        """Remove a key that no longer signs: tokens it signed stop verifying (on every instance,
        within ``key_refresh_s``; at once with --redis-url), and what they opened closes."""
        async with self.store.write() as tx:
            await tx.serialize("signing_keys")
            rows = await tx.keys.all()
            if kid not in {r.kid for r in rows}:
                raise NotFound(f"No signing key {kid!r} (see `tether admin keys`).")
            if kid == active_kid([(r.kid, r.active) for r in rows]):
                raise Conflict(f"{kid} is the active key: `tether admin rotate-keys` first, then retire it.")
            await tx.keys.delete(kid)
        await self.refresh_keys()
        self._announce()

    async def signing_keys(self) -> list[SigningKey]:
        async with self.store.read() as tx:
            return await tx.keys.all()

    def _announce(self) -> None:
        if self.announce is not None:
            self.announce()

    async def refresh_keys(self) -> KeyChanges:
        """Re-read the key table; take what changed (a retired key's streams close here)."""
        rows = await self.signing_keys()
        if not rows or self.keys is None:  # (a table emptied by hand: keep signing with what is held)
            return KeyChanges(frozenset(), frozenset(), False)
        stored = {r.kid: r.secret for r in rows}
        changes = key_changes(self.keys.keys, self.keys.active_kid, stored,
                              active_kid([(r.kid, r.active) for r in rows]))
        if changes.any:
            self._load_keys(rows)
            log.info("signing keys changed: active %s, added %s, retired %s", self.keys.active_kid,
                     sorted(changes.added), sorted(changes.retired))
            if changes.retired and self.on_retired is not None:
                self.on_retired(changes.retired)
        return changes

    def keys_changed(self) -> None:
        """Another instance (or `tether admin`) changed the keys: re-read them now."""
        self._recheck.set()

    async def run_key_refresh(self) -> None:
        """Until cancelled: re-read the keys when told to, and every ``key_refresh_s`` regardless
        (a notice lost with Redis, or a change made without it)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._recheck.wait(), self.config.key_refresh_s)
            self._recheck.clear()
            try:
                await self.refresh_keys()
            except Exception:  # the refresh must outlive one failed pass (the database away): the next tries again
                log.warning("could not re-read the signing keys", exc_info=True)

    # ---- bootstrap ------------------------------------------------------------------------
    async def ensure_owner(self, tx: Tx, *, org_name: str = "default", email: str = "owner@localhost",
                           role: str = "owner") -> tuple[OrgRecord, UserRecord, bool]:
        """The org and user by name/email, created on first use. Returns (org, user, created)."""
        if role not in ROLES:
            raise InvalidRequest(f"role must be one of {', '.join(ROLES)}")
        now = time.time()
        created = False
        await tx.serialize("accounts")  # two starts (or admin commands) create an org or user once
        org = await tx.orgs.by_name(org_name)
        if org is None:
            org = await tx.orgs.insert(org_name, now)
            created = True
        user = await tx.users.by_email(email)
        if user is None:
            user = await tx.users.insert(org.id, email, role, now)
            created = True
        elif user.org_id != org.id:
            raise InvalidRequest(f"{email} belongs to another organisation")
        return org, user, created

    async def bootstrap(self) -> tuple[OrgRecord, UserRecord, bool]:
        """On first start: the default org and its owner."""
        async with self.store.write() as tx:
            await tx.serialize("accounts")
            org = await tx.orgs.first()
            if org is not None:
                users = await tx.users.of_org(org.id)
                owners = [u for u in users if u.role == "owner"] or users
                if owners:
                    return org, owners[0], False
            return await self.ensure_owner(tx)

    # ---- issuing credentials --------------------------------------------------------------
    async def issue(self, tx: Tx, kind: str, user: UserRecord | None, *, ttl: float | None,
                    name: str | None = None, extra: dict[str, Any] | None = None,
                    lookup: str | None = None) -> IssuedToken:
        """A new credential of ``kind`` for ``user`` (None: nobody's yet, a device code)."""
        secret = sec.new_secret(kind)
        now = time.time()
        row = await tx.tokens.insert(
            kind=kind, secret_hash=sec.hash_secret(secret), org_id=user.org_id if user else None,
            user_id=user.id if user else None, name=name, expires_at=(now + ttl) if ttl else None, created_at=now,
            extra=extra, lookup=lookup,
        )
        return IssuedToken(secret, row)

    async def issue_session_pair(self, tx: Tx, user: UserRecord, family: str | None = None) -> dict[str, Any]:
        """An access token and a rotating refresh token (OAuth token response body)."""
        family = family or sec.new_secret("refresh")[4:20]
        access = await self.issue(tx, "access", user, ttl=self.config.access_token_ttl_s, extra={"family": family})
        refresh = await self.issue(tx, "refresh", user, ttl=self.config.refresh_token_ttl_s,
                                   extra={"family": family})
        return {
            "access_token": access.secret,
            "token_type": "Bearer",
            "expires_in": int(self.config.access_token_ttl_s),
            "refresh_token": refresh.secret,
        }

    async def login_link(self, tx: Tx, user: UserRecord) -> str:
        issued = await self.issue(tx, "login_link", user, ttl=self.config.login_link_ttl_s)
        return f"{self.config.url}{login_path(issued.secret)}"

    # ---- checking credentials -------------------------------------------------------------
    async def token_row(self, tx: Tx, secret: str, kinds: tuple[str, ...]) -> TokenRecord:
        kind = self._kind_among(secret, kinds)
        row = await tx.tokens.by_hash(sec.hash_secret(secret))
        return self._check_row(row, kind)

    @staticmethod
    def _kind_among(secret: str, kinds: tuple[str, ...]) -> str:
        kind = sec.kind_of(secret)
        if kind not in kinds:
            names = {"access": "an access token", "personal": "a personal API token",
                     "web_session": "a web session", "refresh": "a refresh token"}
            wanted = " or ".join(names.get(k, k) for k in kinds)
            raise AuthenticationFailed(f"This route needs {wanted}.")
        return kind

    @staticmethod
    def _check_row(row: TokenRecord | None, kind: str) -> TokenRecord:
        if row is None or row.kind != kind:
            raise AuthenticationFailed("The credential is not recognised.")
        verdict = credential_verdict(row.revoked, row.expires_at, time.time())
        if verdict == "revoked":
            raise AuthenticationFailed("The credential has been revoked.")
        if verdict == "expired":
            raise AuthenticationFailed("The credential has expired; refresh it or log in again.")
        return row

    async def principal(self, secret: str, *, kinds: tuple[str, ...] = USER_KINDS) -> Principal:
        """The person behind ``secret``, read from the database on every call (no cache: a
        revocation, a role change or a policy change counts from the next request, on every
        instance and whatever process wrote it, e.g. ``tether admin``)."""
        kind = self._kind_among(secret, kinds)
        found = await self._credential(sec.hash_secret(secret))
        token, user, org = found if found is not None else (None, None, None)
        row = self._check_row(token, kind)
        if user is None:
            raise AuthenticationFailed("The credential's user no longer exists.")
        if org is None:
            raise AuthenticationFailed("The credential's organisation no longer exists.")
        await self._record_use(row, time.time())
        return Principal(user.id, org.id, user.role, user.email, row.kind, row.id, org.allow_remote_control)

    async def _credential(self, secret_hash: str) -> tuple[TokenRecord, UserRecord | None, OrgRecord | None] | None:
        if self.store.is_sqlite:  # one statement: its own snapshot, no transaction needed
            return sqlite_fast.credential(self.store.sqlite_statement(), secret_hash)
        async with self.store.read() as tx:
            return await tx.tokens.credential(secret_hash)

    async def _record_use(self, row: TokenRecord, now: float) -> None:
        """``last_used_at``, written at most once a minute per credential (never per request)."""
        if not self.last_used.due(row.id, now, row.last_used_at):
            return
        try:
            async with self.store.write() as tx:
                await tx.tokens.update(row.id, last_used_at=now)
        except SQLAlchemyError as exc:  # bookkeeping: the request itself goes on
            self.last_used.forget(row.id)
            log.warning("could not record the use of token %s: %s", row.id, exc)

    async def environment(self, secret: str) -> EnvironmentRecord:
        if sec.kind_of(secret) != "environment":
            raise AuthenticationFailed("Polling needs the environment secret returned by registration.")
        async with self.store.read() as tx:
            env = await tx.environments.by_secret(sec.hash_secret(secret))
        if env is None:
            raise AuthenticationFailed("The environment secret is not recognised.")
        return env

    def worker(self, token: str) -> WorkerClaims:
        if sec.kind_of(token) != "jwt" and not token.startswith("sk-ant-si-"):
            raise AuthenticationFailed("This route needs a worker token.")
        assert self.keys is not None
        return self.keys.verify(token, now=time.time())

    def worker_for_session(self, token: str, session_body: str) -> WorkerClaims:
        claims = self.worker(token)
        if claims.session_body != session_body:
            raise AuthenticationFailed("The worker token belongs to another session.")
        return claims

