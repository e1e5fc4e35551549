"""People and their credentials (docs/protocol.md §1, §3): the organisation's policy and members,
personal tokens, login links, web sessions, the device flow and refresh-token rotation. Checking a
credential is ``auth.service.Auth``'s; every write that issues, uses up or revokes one is here, and
a revocation closes the sockets it opened once committed (``streams.py``, 4003)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import Any

from tether.errors import AuthenticationFailed, Conflict, InvalidRequest, NotFound, TetherError
from tether.protocol.access import credential_verdict
from tether.server.auth import secrets as sec
from tether.server.auth.service import Auth, IssuedToken, Principal
from tether.server.clock import now
from tether.server.config import Config
from tether.server.store import Store, Tx
from tether.server.store.records import AuditEntry, MemberRecord, OrgRecord, TokenRecord, UserRecord
from tether.server.streams import CLOSE_UNAUTHORIZED, OpenStreams, token_key

__all__ = ["Accounts", "DeviceGrant", "oauth_error", "open_accounts"]



def oauth_error(code: str, message: str, status: int = 400) -> TetherError:
    """RFC 6749/8628 errors keep Tether's one JSON shape; ``error.type`` carries the RFC code."""
    return TetherError(message, error_type=code, status=status)


@dataclass(frozen=True)
class DeviceGrant:
    """A device code just issued (RFC 8628 §3.2)."""

    device_code: str
    user_code: str


class Accounts:
    def __init__(self, config: Config, store: Store, auth: Auth, streams: OpenStreams) -> None:
        self.config = config
        self.store = store
        self.auth = auth
        self.streams = streams

    def _close_after_commit(self, tx: Tx, token_ids: Iterable[str], reason: str) -> None:
        keys = [token_key(i) for i in token_ids]
        if keys:
            tx.after_commit(lambda: [self.streams.close_key(k, CLOSE_UNAUTHORIZED, reason) for k in keys])

    # ---- the organisation -----------------------------------------------------------------
    async def org(self, org_id: str) -> OrgRecord:
        async with self.store.read() as tx:
            org = await tx.orgs.get(org_id)
        if org is None:
            raise NotFound("No such organisation.")
        return org

    async def set_policy(self, principal: Principal, allow_remote_control: bool) -> None:
        principal.require_owner()
        async with self.store.write() as tx:
            await tx.orgs.set_policy(principal.org_id, allow_remote_control)
            await tx.audit.insert(principal.org_id, principal.user_id, "org.policy", principal.org_id,
                                  {"allow_remote_control": allow_remote_control}, now())

    async def audit(self, principal: Principal, limit: int, before: int | None) -> list[AuditEntry]:
        principal.require_owner()
        async with self.store.read() as tx:
            return await tx.audit.of_org(principal.org_id, limit, before)

    # ---- members --------------------------------------------------------------------------
    async def members(self, org_id: str) -> list[UserRecord]:
        async with self.store.read() as tx:
            return await tx.users.of_org(org_id)

    async def add_member(self, principal: Principal, email: str, role: str) -> tuple[UserRecord, str]:
        """A new person of the owner's organisation, and a one-time login link for them."""
        principal.require_owner()
        t = now()
        async with self.store.write() as tx:
            if await tx.users.by_email(email) is not None:
                raise Conflict("A person with that email already has an account.")
            row = await tx.users.insert(principal.org_id, email, role, t)
            link = await self.auth.login_link(tx, row)
            await tx.audit.insert(principal.org_id, principal.user_id, "member.add", row.id,
                                  {"email": email, "role": role}, t)
        return row, link

    async def set_role(self, principal: Principal, user_id: str, role: str) -> UserRecord:
        """A member's new role; sockets holding more than it close once committed (4003)."""
        principal.require_owner()
        async with self.store.write() as tx:
            rows = await tx.users.of_org(principal.org_id)
            target = next((r for r in rows if r.id == user_id), None)
            if target is None:
                raise NotFound("No such member.")
            owners = [r for r in rows if r.role == "owner"]
            if target.role == "owner" and role != "owner" and len(owners) <= 1:
                raise Conflict("The organisation needs at least one owner.")
            await tx.users.update(user_id, role=role)
            await tx.audit.insert(principal.org_id, principal.user_id, "member.role", user_id, {"role": role}, now())
            tx.after_commit(lambda: self.streams.role_changed(user_id, role, CLOSE_UNAUTHORIZED,
                                                              "Your role changed; reconnect."))
        return replace(target, role=role)

    # ---- personal tokens ------------------------------------------------------------------
    async def tokens(self, user_id: str) -> list[TokenRecord]:
        async with self.store.read() as tx:
            return [r for r in await tx.tokens.of_user(user_id, "personal") if not r.revoked]

    async def create_token(self, principal: Principal, name: str, ttl_s: float | None) -> IssuedToken:
        async with self.store.write() as tx:
            account = await self._user(tx, principal.user_id)
            issued = await self.auth.issue(tx, "personal", account, ttl=ttl_s, name=name)
            await tx.audit.insert(principal.org_id, principal.user_id, "token.create", issued.row.id,
                                  {"name": name}, now())
        return issued

    async def revoke_token(self, principal: Principal, token_id: str) -> None:
        async with self.store.write() as tx:
            row = await tx.tokens.get(token_id)
            if row is None or row.user_id != principal.user_id or row.kind != "personal":
                raise NotFound("No such token.")
            await tx.tokens.update(token_id, revoked=True)
            await tx.audit.insert(principal.org_id, principal.user_id, "token.revoke", token_id, None, now())
            self._close_after_commit(tx, [token_id], "The token was revoked.")

    async def _user(self, tx: Tx, user_id: str) -> UserRecord:
        account = await tx.users.get(user_id)
        if account is None:
            raise AuthenticationFailed("The credential's user no longer exists.")
        return account

    # ---- login links and web sessions -----------------------------------------------------
    async def create_login_link(self, principal: Principal, next_path: str) -> IssuedToken:
        """A one-time link that logs a browser in as the caller, for ``shared_login_link_ttl_s``."""
        async with self.store.write() as tx:
            account = await self._user(tx, principal.user_id)
            issued = await self.auth.issue(tx, "login_link", account, ttl=self.config.shared_login_link_ttl_s)
            await tx.audit.insert(principal.org_id, principal.user_id, "login_link.create", issued.row.id,
                                  {"next": next_path, "credential": principal.kind}, now())
        return issued

    async def redeem_login_link(self, secret: str) -> IssuedToken | None:
        """A web session for the link's user, using the link up; None for a link that is not (or
        no longer) good."""
        if sec.kind_of(secret) != "login_link":
            return None
        t = now()
        async with self.store.write() as tx:
            row = await tx.tokens.by_hash(sec.hash_secret(secret))
            if row is None or row.kind != "login_link" or credential_verdict(
                    row.revoked, row.expires_at or 0, t) != "valid":
                return None
            await tx.tokens.update(row.id, revoked=True, last_used_at=t)
            if row.user_id is None:
                return None
            return await self._web_session(tx, row.user_id)

    async def password_login(self, email: str, password: str) -> IssuedToken | None:
        """A web session for the right email and password, else None."""
        async with self.store.read() as tx:
            account = await tx.users.by_email(email)
        if account is None or not sec.verify_password(password, account.password_hash):
            return None
        async with self.store.write() as tx:
            return await self._web_session(tx, account.id)

    async def _web_session(self, tx: Tx, user_id: str) -> IssuedToken:
        account = await tx.users.get(user_id)
        if account is None:
            raise AuthenticationFailed("No such user.")
        issued = await self.auth.issue(tx, "web_session", account, ttl=self.config.web_session_ttl_s)
        await tx.audit.insert(account.org_id, user_id, "web.login", None, None, now())
        return issued

    async def logout(self, principal: Principal) -> None:
        async with self.store.write() as tx:
            await tx.tokens.update(principal.token_id, revoked=True)
            self._close_after_commit(tx, [principal.token_id], "Logged out.")

    # ---- the device flow (RFC 8628) and refresh-token rotation ----------------------------
    async def device_code(self, client_id: str) -> DeviceGrant:
        code = sec.user_code()
        async with self.store.write() as tx:
            issued = await self.auth.issue(tx, "device_code", None, ttl=self.config.device_code_ttl_s,
                                           extra={"status": "pending", "client_id": client_id, "last_poll": 0},
                                           lookup=code.replace("-", ""))
        return DeviceGrant(issued.secret, code)

    async def approve_device(self, user_id: str, code: str, approve: bool) -> None:
        lookup = code.strip().upper().replace("-", "").replace(" ", "")
        async with self.store.write() as tx:
            row = await tx.tokens.by_lookup("device_code", lookup)
            if row is None or credential_verdict(row.revoked, row.expires_at or 0, now()) != "valid":
                raise InvalidRequest("That code is unknown or expired; run `tether login` again.")
            extra = dict(row.extra or {})
            if extra.get("status") != "pending":
                raise InvalidRequest("That code was already used.")
            extra.update(status="approved" if approve else "denied", user_id=user_id)
            await tx.tokens.update(row.id, extra=extra)
            user = await tx.users.get(user_id)
            if user:
                await tx.audit.insert(user.org_id, user_id, "device.approve" if approve else "device.deny",
                                      None, {"client_id": extra.get("client_id")}, now())

    async def device_grant(self, code: str) -> dict[str, Any]:
        """``grant_type=device_code``: pending, slow down, denied, or the token pair (once)."""
        if sec.kind_of(code) != "device_code":
            raise oauth_error("invalid_grant", "Unknown device_code.")
        t = now()
        interval = self.config.limits.device_poll_interval_s
        async with self.store.write() as tx:
            row = await tx.tokens.by_hash(sec.hash_secret(code))
            if row is None or row.kind != "device_code" or row.revoked:
                raise oauth_error("invalid_grant", "Unknown or used device_code.")
            if credential_verdict(False, row.expires_at, t) == "expired":
                raise oauth_error("expired_token", "The device code expired; start `tether login` again.")
            extra = dict(row.extra or {})
            too_fast = False
            if extra.get("status") == "pending":
                too_fast = t - float(extra.get("last_poll", 0)) < interval * 0.8
                extra["last_poll"] = t
                await tx.tokens.update(row.id, extra=extra)
        # raised after the commit: an exception inside the transaction would roll back last_poll
        if too_fast:
            raise oauth_error("slow_down", f"Poll at most every {interval} s.")
        status = extra.get("status")
        if status == "pending":
            raise oauth_error("authorization_pending", "Waiting for approval in the browser.")
        if status == "denied":
            raise oauth_error("access_denied", "The request was denied.")
        async with self.store.write() as tx:
            row = await tx.tokens.by_hash(sec.hash_secret(code))
            if row is None or row.revoked:
                raise oauth_error("invalid_grant", "The device_code was already used.")
            await tx.tokens.update(row.id, revoked=True)
            user = await tx.users.get(extra["user_id"])
            if user is None:
                raise oauth_error("invalid_grant", "The approving user no longer exists.")
            return await self.auth.issue_session_pair(tx, user)

    async def refresh_grant(self, refresh: str) -> dict[str, Any]:
        """``grant_type=refresh_token``: rotate; a rotated token used again revokes its whole login."""
        if sec.kind_of(refresh) != "refresh":
            raise oauth_error("invalid_grant", "Unknown refresh_token.")
        async with self.store.write() as tx:
            row = await tx.tokens.by_hash(sec.hash_secret(refresh))
            if row is None or row.kind != "refresh":
                raise oauth_error("invalid_grant", "Unknown refresh_token.")
            family = row.family
            reused = bool(row.revoked)
            rotated = row.last_used_at is not None  # revoked by rotation, not by /oauth/revoke
            if reused:
                # A rotated refresh token used again: someone copied it. Revoke the whole family
                # (and commit that: the error is raised after the transaction, not inside it).
                if family:
                    self._close_after_commit(tx, await tx.tokens.revoke_family(family),
                                             "The login was revoked (a refresh token was reused).")
            else:
                if credential_verdict(False, row.expires_at, now()) == "expired":
                    raise oauth_error("invalid_grant", "The refresh token expired; log in again.")
                await tx.tokens.update(row.id, revoked=True, last_used_at=now())
                user = await tx.users.get(row.user_id) if row.user_id else None
                if user is None:
                    raise oauth_error("invalid_grant", "The user no longer exists.")
                return await self.auth.issue_session_pair(tx, user, family=family)
        if rotated:
            raise oauth_error("invalid_grant", "The refresh token was already used; log in again.")
        raise oauth_error("invalid_grant", "The refresh token was revoked; log in again.")

    async def revoke(self, secret: str) -> None:
        """RFC 7009: revoke a token (and its login's family); unknown tokens change nothing."""
        async with self.store.write() as tx:
            row = await tx.tokens.by_hash(sec.hash_secret(secret))
            if row is not None and row.kind in ("access", "refresh", "personal"):
                family = row.family
                revoked = await tx.tokens.revoke_family(family) if family else []
                await tx.tokens.update(row.id, revoked=True)
                self._close_after_commit(tx, [*revoked, row.id], "The token was revoked.")

    # ---- on the server's machine (tether admin) -------------------------------------------
    async def admin_token(self, org: str, email: str, role: str, name: str) -> str:
        """A personal token for ``email`` of ``org`` (both created on first use)."""
        async with self.store.write() as tx:
            _org, user, _ = await self.auth.ensure_owner(tx, org_name=org, email=email, role=role)
            issued = await self.auth.issue(tx, "personal", user, ttl=None, name=name)
            await tx.audit.insert(user.org_id, "admin", "token.create", issued.row.id, {"name": name}, 0.0)
        return issued.secret

    async def admin_login_link(self, email: str | None) -> str:
        """A one-time login URL for ``email`` (None: the first owner, created on first start)."""
        if email:
            async with self.store.read() as tx:
                user = await tx.users.by_email(email)
            if user is None:
                raise NotFound(f"no user {email}")
        else:
            _org, user, _ = await self.auth.bootstrap()
        async with self.store.write() as tx:
            return await self.auth.login_link(tx, user)

    async def owner_login_link(self) -> tuple[str, bool]:
        """A one-time login URL for the first owner, and whether this start created them."""
        _org, owner, created = await self.auth.bootstrap()
        async with self.store.write() as tx:
            return await self.auth.login_link(tx, owner), created

    async def owner_token(self, name: str, *, replace_named: bool = False) -> str:
        """A new personal token of the first owner; ``replace_named`` revokes the owner's earlier
        tokens of that name first (a restart does not pile them up)."""
        _org, owner, _ = await self.auth.bootstrap()
        async with self.store.write() as tx:
            if replace_named:
                for old in await tx.tokens.of_user(owner.id, "personal"):
                    if old.name == name and not old.revoked:
                        await tx.tokens.update(old.id, revoked=True)
            issued = await self.auth.issue(tx, "personal", owner, ttl=None, name=name)
            await tx.audit.insert(owner.org_id, "admin", "token.create", issued.row.id, {"name": name}, now())
        return issued.secret

    async def everyone(self) -> list[MemberRecord]:
        """Users of every organisation with their organisation's name."""
        async with self.store.read() as tx:
            return await tx.users.everyone()

    async def set_password(self, email: str, password: str) -> None:
        async with self.store.write() as tx:
            user = await tx.users.by_email(email)
            if user is None:
                raise NotFound(f"no user {email}")
            await tx.users.update(user.id, password_hash=sec.hash_password(password))

    async def org_policy(self, org: str, allow_remote_control: bool | None) -> bool:
        """The named organisation's ``allow_remote_control``, changed first when a value is given."""
        async with self.store.write() as tx:
            row = await tx.orgs.by_name(org)
            if row is None:
                raise NotFound(f"no organisation {org!r}")
            if allow_remote_control is not None:
                await tx.orgs.set_policy(row.id, allow_remote_control)
                return allow_remote_control
            return bool(row.allow_remote_control)



@contextlib.asynccontextmanager
async def open_accounts(config: Config) -> AsyncIterator[Accounts]:
    """The accounts of a server's database, without the server (``tether admin`` on its machine):
    migrated to the newest schema and with its signing keys loaded; no sockets to close."""
    store = Store(config.db_url)
    try:
        await store.open()
        auth = Auth(config, store)
        await auth.open()
        yield Accounts(config, store, auth, OpenStreams())
    finally:
        await store.close()
