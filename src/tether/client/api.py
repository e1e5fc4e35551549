"""Async client of a Tether server's HTTP APIs (httpx): OAuth, ``/v1/me``, ``/v1/bridge/config``,
the Environments API (E1–E9) and the Sessions API (S1–S7), docs/protocol.md §3.1–§3.3 and §3.1.

* **Headers** follow docs/protocol.md §3.1: environments calls send ``anthropic-version``,
  ``anthropic-beta: environments-2025-11-01`` and ``x-environment-runner-version``;
  sessions calls send ``anthropic-beta: ccr-byoc-2025-07-29`` and ``x-organization-uuid``
  (fetched from ``/v1/me`` once when the credentials do not carry it).
* **Ids** that go into a path must match ``^[a-zA-Z0-9_-]+$`` (``validateBridgeId``); the
  call is refused with :class:`~tether.errors.ProtocolError` before anything is sent.
* **Errors** (:mod:`tether.protocol.api_status`): 401/403/404/410 → :class:`BridgeFatalError`;
  429 and other 4xx → :class:`ApiError` (``retry_after`` from ``Retry-After``); 5xx and network
  trouble → :class:`ApiUnavailable`. Environments routes accept only 200/204.
* **Tokens**: calls made with the user credential refresh the access token shortly before it
  expires and, after a 401, once more and retry once (``withOAuthRetry``). Calls made with an
  environment secret (poll) or a worker token (ack, heartbeat, E9) never refresh. Rotated
  tokens are written back to the :class:`CredentialStore` under its lock.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx

from tether import __version__
from tether.client.credentials import Credentials, CredentialStore
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, NotLoggedIn, ProtocolError
from tether.protocol.access_token import DEFAULT_REFRESH_MARGIN_S, expires_at_from, is_expired, refresh_due
from tether.protocol.api_status import (
    ENVIRONMENTS_SUCCESS,
    GENERAL_SUCCESS,
    classify_status,
    extract_error_detail,
    parse_retry_after,
)
from tether.protocol.device_flow import device_poll_step, initial_interval
from tether.protocol.epochs import EpochInvalid, parse_epoch
from tether.protocol.ids import is_valid_id, to_compat_session_id, to_infra_session_id
from tether.protocol.poll_config import ParsedPollConfig, parse_poll_config

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_TIMEOUT_S",
    "DEVICE_GRANT",
    "ENVIRONMENTS_BETA",
    "OAUTH_TIMEOUT_S",
    "POLL_TIMEOUT_S",
    "REGISTER_TIMEOUT_S",
    "SEND_EVENTS_TIMEOUT_S",
    "SESSIONS_BETA",
    "USER_AGENT",
    "ApiClient",
    "Auth",
    "BridgeConfig",
    "DeviceCode",
    "HeaderSet",
    "HeartbeatResult",
    "LoginLink",
    "Registration",
    "TokenPair",
    "WorkItem",
    "WorkerCredentials",
    "git_repository_source",
    "repository_context",
    "validate_id",
]

log = logging.getLogger("tether.client.api")

ANTHROPIC_VERSION: Final = "2023-06-01"
ENVIRONMENTS_BETA: Final = "environments-2025-11-01"
SESSIONS_BETA: Final = "ccr-byoc-2025-07-29"
DEVICE_GRANT: Final = "urn:ietf:params:oauth:grant-type:device_code"
USER_AGENT: Final = f"tether/{__version__}"

REGISTER_TIMEOUT_S: Final = 15.0
DEFAULT_TIMEOUT_S: Final = 10.0
POLL_TIMEOUT_S: Final = 10.0
SEND_EVENTS_TIMEOUT_S: Final = 30.0
OAUTH_TIMEOUT_S: Final = 15.0

HeaderSet = Literal["env", "sessions", "plain", "oauth", "ingress"]
Auth = Literal["user", "none"]


def validate_id(value: object, what: str) -> str:
    """``validateBridgeId``: refuse an id that is not safe inside a URL path."""
    if not is_valid_id(value):
        raise ProtocolError(f"Refusing to use an invalid {what} id: {value!r}.")
    assert isinstance(value, str)
    return value


# ---- answers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceCode:
    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: float
    interval: float


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str | None
    expires_in: float | None
    token_type: str = "Bearer"


@dataclass(frozen=True)
class LoginLink:
    """A one-time login link of the caller (``POST /v1/login-links``)."""

    url: str
    next_path: str
    expires_in: float


@dataclass(frozen=True)
class Registration:
    environment_id: str
    environment_secret: str
    requested_id: str | None = None

    @property
    def reattached(self) -> bool:
        """True when the server re-attached the environment id we asked for."""
        return self.requested_id is not None and self.requested_id == self.environment_id


def git_repository_source(url: str, revision: str | None = None) -> dict[str, Any]:
    """One ``session_context.sources`` entry of S1: a git repository, at ``revision`` when given."""
    source: dict[str, Any] = {"type": "git_repository", "url": url}
    if revision:
        source["revision"] = revision
    return source


def repository_context(git_repo_url: str | None, branch: str | None) -> dict[str, Any]:
    """S1's ``session_context`` for a session in a checkout: its remote (at ``branch``) as the
    source; empty without a remote."""
    return {"sources": [git_repository_source(git_repo_url, branch)]} if git_repo_url else {}


@dataclass(frozen=True)
class WorkItem:
    """A ``WorkResponse`` (docs/protocol.md §3.2): ``data_type`` is ``session`` or ``healthcheck``."""

    id: str
    environment_id: str
    state: str
    data_type: str
    data_id: str
    secret: str
    created_at: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @classmethod
    def from_json(cls, data: object) -> WorkItem:
        if not isinstance(data, dict):
            raise ProtocolError("The work poll answered something that is not an object.")
        inner = data.get("data")
        if not isinstance(inner, dict):
            raise ProtocolError("A work item lacks its 'data' object.")
        work_id = validate_id(data.get("id"), "work")
        secret = data.get("secret")
        return cls(
            id=work_id,
            environment_id=str(data.get("environment_id") or ""),
            state=str(data.get("state") or ""),
            data_type=str(inner.get("type") or ""),
            data_id=str(inner.get("id") or ""),
            secret=secret if isinstance(secret, str) else "",
            created_at=data.get("created_at") if isinstance(data.get("created_at"), str) else None,
            raw=data,
        )


@dataclass(frozen=True)
class HeartbeatResult:
    lease_extended: bool
    state: str
    last_heartbeat: str | None
    ttl_seconds: float | None


@dataclass(frozen=True)
class WorkerCredentials:
    """C2's answer: a worker token for the session, its lifetime and the (bumped) worker epoch."""

    worker_jwt: str
    api_base_url: str | None
    expires_in: float
    worker_epoch: int


@dataclass(frozen=True)
class BridgeConfig:
    poll: ParsedPollConfig
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def multi_session(self) -> bool:
        return bool(self.raw.get("multi_session", False))

    @property
    def lease_ttl_seconds(self) -> float | None:
        value = self.raw.get("lease_ttl_seconds")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# ---- the client ---------------------------------------------------------------------------------

class ApiClient:
    """One server, one (optional) user credential. Use as ``async with ApiClient(...) as api``."""

    def __init__(self, server: str, credentials: Credentials | None = None, *,
                 store: CredentialStore | None = None, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time, refresh_margin: float = DEFAULT_REFRESH_MARGIN_S,
                 verify: bool | str = True, client_id: str = "tether-cli") -> None:
        self.server = server.rstrip("/")
        self._credentials = credentials
        self._store = store
        self._clock = clock
        self._margin = refresh_margin
        self._client_id = client_id
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(base_url=self.server, verify=verify, follow_redirects=False,
                                               timeout=DEFAULT_TIMEOUT_S)
        self._refresh_lock = asyncio.Lock()
        self._org_uuid: str | None = credentials.org_uuid if credentials else None
        self.refresh_count = 0

    @classmethod
    def from_store(cls, store: CredentialStore, server: str | None = None, **kwargs: Any) -> ApiClient:
        """A client for ``server`` (else ``TETHER_SERVER`` / the stored login) with the matching
        credentials, or none (OAuth calls still work; user calls raise :class:`NotLoggedIn`)."""
        url = store.server_url(server)
        return cls(url, store.resolve(url), store=store, **kwargs)

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    @property
    def credentials(self) -> Credentials | None:
        return self._credentials

    @property
    def current_access_token(self) -> str | None:
        """The user access token as it is now (a transport reads it before each (re)connect)."""
        return self._credentials.access_token if self._credentials else None

    async def access_token(self) -> str:
        """The user access token, refreshed first when it is about to expire."""
        return await self._user_token()

    async def force_refresh(self) -> bool:
        """Refresh the access token now (False when this login cannot refresh, e.g. a personal token)."""
        creds = self._require_credentials()
        return await self._refresh(stale=creds.access_token)

    # ---- plumbing ----------------------------------------------------------------------------
    def _headers(self, kind: HeaderSet, token: str | None) -> dict[str, str]:
        headers = {"user-agent": USER_AGENT}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        if kind == "oauth":
            return headers
        headers["content-type"] = "application/json"
        if kind == "ingress":
            return headers
        headers["anthropic-version"] = ANTHROPIC_VERSION
        if kind == "env":
            headers["anthropic-beta"] = ENVIRONMENTS_BETA
            headers["x-environment-runner-version"] = __version__
        elif kind == "sessions":
            headers["anthropic-beta"] = SESSIONS_BETA
            if self._org_uuid:
                headers["x-organization-uuid"] = self._org_uuid
        return headers

    def _require_credentials(self) -> Credentials:
        if self._credentials is None:
            raise NotLoggedIn(f"Not logged in to {self.server}. Run `tether login --server {self.server}` "
                              "or set TETHER_TOKEN.")
        return self._credentials

    async def _user_token(self) -> str:
        creds = self._require_credentials()
        if creds.can_refresh and refresh_due(now=self._clock(), expires_at=creds.expires_at,
                                             issued_at=creds.issued_at, margin=self._margin):
            try:
                await self._refresh(stale=creds.access_token)
            except ApiUnavailable:
                if is_expired(now=self._clock(), expires_at=creds.expires_at):
                    raise
                log.warning("could not refresh the access token yet; using it until it expires")
        return self._require_credentials().access_token

    async def _refresh(self, stale: str | None) -> bool:
        """Refresh the access token unless someone already did. False when this login cannot refresh."""
        async with self._refresh_lock:
            creds = self._credentials
            if creds is None or not creds.can_refresh:
                return False
            if stale is not None and creds.access_token != stale:
                return True  # another task of this process refreshed while we waited
            if self._store is None:
                await self._refresh_now(creds)
                return True
            async with self._store.locked_async():
                latest = self._store.read_file_or_none()
                same_login = (latest is not None and latest.server == creds.server and latest.can_refresh
                              and latest.user_id == creds.user_id)
                if same_login and latest is not None and latest.refresh_token != creds.refresh_token:
                    # another process rotated the tokens: adopt them (re-using ours would revoke the login)
                    self._credentials = latest
                    if not refresh_due(now=self._clock(), expires_at=latest.expires_at,
                                       issued_at=latest.issued_at, margin=self._margin):
                        return True
                    creds = latest
                await self._refresh_now(creds)
                assert self._credentials is not None
                if same_login:  # never re-create a file that `tether logout` removed, nor clobber another login
                    self._store.save(self._credentials)
            return True

    async def _refresh_now(self, creds: Credentials) -> None:
        assert creds.refresh_token is not None
        issued = self._clock()
        try:
            pair = await self.refresh_tokens(creds.refresh_token)
        except ApiError as exc:
            if exc.status in (400, 401):
                raise BridgeFatalError(
                    f"Your login to {self.server} has expired or was revoked ({exc.message}). "
                    "Run `tether login` again.", status=401, error_type=exc.error_type, expired=True,
                ) from None
            raise
        self._credentials = creds.with_tokens(pair.access_token, pair.refresh_token,
                                              expires_at_from(issued, pair.expires_in), issued)
        self.refresh_count += 1

    async def _request(self, method: str, path: str, *, headers: HeaderSet, auth: Auth | str = "user",
                       json: Any = None, data: Mapping[str, str] | None = None,
                       params: Mapping[str, str | int] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                       success: frozenset[int] = GENERAL_SUCCESS) -> httpx.Response:
        """One call; ``auth`` is ``"user"`` (refresh + one retry after 401), ``"none"``, or a
        literal bearer token (environment secret / worker token: never refreshed)."""
        for attempt in (0, 1):
            if auth == "user":
                if headers == "sessions" and self._org_uuid is None:
                    await self._learn_org()
                token: str | None = await self._user_token()
            elif auth == "none":
                token = None
            else:
                token = auth
            try:
                resp = await self._http.request(method, path, headers=self._headers(headers, token), json=json,
                                                data=data, params=params, timeout=timeout)
            except httpx.TimeoutException as exc:
                raise ApiUnavailable(f"{method} {path} timed out after {timeout:g} s ({type(exc).__name__}).",
                                     kind="connection", reason=f"no answer within {timeout:g} s") from None
            except httpx.TransportError as exc:
                cause = str(exc) or type(exc).__name__
                raise ApiUnavailable(f"Cannot reach {self.server}: {cause}.", kind="connection",
                                     reason=cause) from None
            if (resp.status_code == 401 and auth == "user" and attempt == 0
                    and await self._refresh(stale=token)):
                continue
            return self._check(resp, success)
        raise AssertionError("unreachable")

    @staticmethod
    def _json_or_none(resp: httpx.Response) -> Any:
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def _check(self, resp: httpx.Response, success: frozenset[int]) -> httpx.Response:
        verdict = classify_status(resp.status_code, extract_error_detail(self._json_or_none(resp)),
                                  success=success)
        if verdict.ok:
            return resp
        if verdict.outcome == "fatal":
            raise BridgeFatalError(verdict.message, status=verdict.status, error_type=verdict.error_type,
                                   expired=verdict.expired, suppressible=verdict.suppressible)
        if verdict.outcome == "server_error":
            raise ApiUnavailable(verdict.message, kind="server", http_status=verdict.status)
        raise ApiError(verdict.message, status=verdict.status, error_type=verdict.error_type,
                       retry_after=parse_retry_after(resp.headers.get("retry-after")))

    async def _learn_org(self) -> None:
        me = await self.me()
        org = me.get("organization_uuid")
        if isinstance(org, str) and org:
            self._org_uuid = org

    # ---- OAuth ----------------------------------------------------------------------------------
    async def request_device_code(self) -> DeviceCode:
        resp = await self._request("POST", "/oauth/device/code", headers="oauth", auth="none",
                                   data={"client_id": self._client_id}, timeout=OAUTH_TIMEOUT_S)
        body = _object(resp)
        try:
            return DeviceCode(
                device_code=str(body["device_code"]), user_code=str(body["user_code"]),
                verification_uri=str(body["verification_uri"]),
                verification_uri_complete=str(body.get("verification_uri_complete") or body["verification_uri"]),
                expires_in=float(body.get("expires_in") or 600), interval=initial_interval(body.get("interval")),
            )
        except (KeyError, TypeError, ValueError):
            raise ProtocolError("The device code answer lacks required fields.") from None

    async def exchange_device_code(self, device_code: str) -> TokenPair:
        """One ``POST /oauth/token`` poll; pending/slow_down/denied/expired come back as :class:`ApiError`."""
        resp = await self._request("POST", "/oauth/token", headers="oauth", auth="none",
                                   data={"grant_type": DEVICE_GRANT, "device_code": device_code,
                                         "client_id": self._client_id},
                                   timeout=OAUTH_TIMEOUT_S, success=frozenset({200}))
        return _token_pair(resp)

    async def wait_for_device_token(self, code: DeviceCode, *,
                                    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                                    monotonic: Callable[[], float] = time.monotonic) -> TokenPair:
        """Poll every ``interval`` s (longer after ``slow_down``) until approved, denied or expired.
        Failures raise :class:`ApiError` with a message for a person and the OAuth ``error_type``."""
        interval = code.interval
        deadline = monotonic() + code.expires_in
        while True:
            await sleep(interval)
            try:
                return await self.exchange_device_code(code.device_code)
            except ApiUnavailable as exc:
                log.warning("device login: %s; still waiting", exc.message)
            except ApiError as exc:
                if exc.fatal:
                    raise
                step = device_poll_step(exc.error_type, interval, exc.message)
                if step.action == "fail":
                    raise ApiError(step.message, status=exc.status, error_type=exc.error_type) from None
                interval = step.interval
            if monotonic() + interval >= deadline:
                step = device_poll_step("expired_token", interval)
                raise ApiError(step.message, status=400, error_type="expired_token")

    async def refresh_tokens(self, refresh_token: str) -> TokenPair:
        resp = await self._request("POST", "/oauth/token", headers="oauth", auth="none",
                                   data={"grant_type": "refresh_token", "refresh_token": refresh_token,
                                         "client_id": self._client_id},
                                   timeout=OAUTH_TIMEOUT_S, success=frozenset({200}))
        return _token_pair(resp)

    async def revoke(self, token: str) -> None:
        await self._request("POST", "/oauth/revoke", headers="oauth", auth="none", data={"token": token},
                            timeout=OAUTH_TIMEOUT_S, success=frozenset({200}))

    def credentials_from(self, pair: TokenPair, me: Mapping[str, Any] | None = None, *,
                         issued_at: float | None = None) -> Credentials:
        """New stored credentials for this server from a token answer (and ``/v1/me``)."""
        issued = self._clock() if issued_at is None else issued_at
        creds = Credentials(server=self.server, access_token=pair.access_token, refresh_token=pair.refresh_token,
                            expires_at=expires_at_from(issued, pair.expires_in), issued_at=issued)
        return creds.with_identity(me) if me else creds

    @property
    def org_uuid(self) -> str | None:
        return self._org_uuid

    def use_credentials(self, creds: Credentials | None) -> None:
        self._credentials = creds
        self._org_uuid = creds.org_uuid if creds else None

    # ---- Tether additions -------------------------------------------------------------------
    async def me(self) -> dict[str, Any]:
        resp = await self._request("GET", "/v1/me", headers="plain", success=frozenset({200}))
        body = _object(resp)
        org = body.get("organization_uuid")
        if isinstance(org, str) and org:
            self._org_uuid = org
        return body

    async def create_login_link(self, next_path: str) -> LoginLink:
        """A short-lived one-time link that logs a browser in as this credential's person and
        opens ``next_path`` (a path on this server)."""
        resp = await self._request("POST", "/v1/login-links", headers="plain", json={"next": next_path},
                                   success=frozenset({200}))
        body = _object(resp)
        path, expires_in = body.get("path"), body.get("expires_in")
        if not isinstance(path, str) or not path.startswith("/login?"):
            raise ProtocolError(f"POST /v1/login-links answered an odd path: {path!r}.")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float) or expires_in <= 0:
            raise ProtocolError(f"POST /v1/login-links answered an odd expires_in: {expires_in!r}.")
        return LoginLink(self.server + path, next_path, float(expires_in))

    async def bridge_config(self) -> BridgeConfig:
        resp = await self._request("GET", "/v1/bridge/config", headers="plain", success=frozenset({200}))
        body = _object(resp)
        parsed = parse_poll_config(body.get("poll_config"))
        if parsed.fell_back:
            log.warning("server poll_config rejected, using defaults: %s", "; ".join(parsed.problems))
        return BridgeConfig(parsed, body)

    async def list_environments(self) -> list[dict[str, Any]]:
        resp = await self._request("GET", "/v1/environments?all=true", headers="plain", success=frozenset({200}))
        data = _object(resp).get("data")
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    # ---- Environments API (E1–E9) ---------------------------------------------------------------
    async def register_environment(self, *, machine_name: str, directory: str, branch: str | None,
                                   git_repo_url: str | None, max_sessions: int, worker_type: str = "claude_code",
                                   environment_id: str | None = None,
                                   metadata: Mapping[str, Any] | None = None, kind: str = "bridge") -> Registration:
        """E1. Pass ``environment_id`` to re-attach; compare :attr:`Registration.reattached`.
        ``kind`` is ``bridge``, or ``cloud`` for a runner (sent only then)."""
        body: dict[str, Any] = {
            "machine_name": machine_name, "directory": directory, "branch": branch,
            "git_repo_url": git_repo_url, "max_sessions": max_sessions,
            "metadata": {**(metadata or {}), "worker_type": worker_type},
        }
        if kind != "bridge":
            body["kind"] = kind
        if environment_id is not None:
            body["environment_id"] = validate_id(environment_id, "environment")
        resp = await self._request("POST", "/v1/environments/bridge", headers="env", json=body,
                                   timeout=REGISTER_TIMEOUT_S, success=ENVIRONMENTS_SUCCESS)
        data = _object(resp)
        env_id, secret = data.get("environment_id"), data.get("environment_secret")
        if not isinstance(secret, str) or not secret:
            raise ProtocolError("Registration answered without an environment_secret.")
        return Registration(validate_id(env_id, "environment"), secret, environment_id)

    async def poll_for_work(self, environment_id: str, environment_secret: str, *,
                            reclaim_older_than_ms: int | None = None,
                            timeout: float = POLL_TIMEOUT_S) -> WorkItem | None:
        """E2 (a long poll): a work item, or None when there is none yet."""
        env = validate_id(environment_id, "environment")
        params = {"reclaim_older_than_ms": reclaim_older_than_ms} if reclaim_older_than_ms else None
        resp = await self._request("GET", f"/v1/environments/{env}/work/poll", headers="env",
                                   auth=environment_secret, params=params, timeout=timeout,
                                   success=ENVIRONMENTS_SUCCESS)
        body = self._json_or_none(resp)
        if body is None and resp.content.strip() not in (b"", b"null"):
            raise ProtocolError("The work poll answered something that is not JSON.")
        return None if body is None else WorkItem.from_json(body)

    async def acknowledge_work(self, environment_id: str, work_id: str, session_token: str) -> None:
        """E3 with the work item's session ingress token."""
        env, work = validate_id(environment_id, "environment"), validate_id(work_id, "work")
        await self._request("POST", f"/v1/environments/{env}/work/{work}/ack", headers="env", auth=session_token,
                            json={}, success=ENVIRONMENTS_SUCCESS)

    async def stop_work(self, environment_id: str, work_id: str, *, force: bool) -> None:
        """E4: ``force=False`` releases the item (the server may re-queue it)."""
        env, work = validate_id(environment_id, "environment"), validate_id(work_id, "work")
        await self._request("POST", f"/v1/environments/{env}/work/{work}/stop", headers="env",
                            json={"force": force}, success=ENVIRONMENTS_SUCCESS)

    async def heartbeat_work(self, environment_id: str, work_id: str, session_token: str) -> HeartbeatResult:
        """E5: extend the lease. 401/403 = token expired (→ E7), 404/410 = work gone."""
        env, work = validate_id(environment_id, "environment"), validate_id(work_id, "work")
        resp = await self._request("POST", f"/v1/environments/{env}/work/{work}/heartbeat", headers="env",
                                   auth=session_token, json={}, success=ENVIRONMENTS_SUCCESS)
        body = self._json_or_none(resp) or {}
        ttl = body.get("ttl_seconds") if isinstance(body, dict) else None
        return HeartbeatResult(
            lease_extended=bool(body.get("lease_extended")) if isinstance(body, dict) else False,
            state=str(body.get("state") or "") if isinstance(body, dict) else "",
            last_heartbeat=body.get("last_heartbeat") if isinstance(body, dict) else None,
            ttl_seconds=float(ttl) if isinstance(ttl, int | float) and not isinstance(ttl, bool) else None,
        )

    async def deregister_environment(self, environment_id: str) -> None:
        """E6."""
        env = validate_id(environment_id, "environment")
        await self._request("DELETE", f"/v1/environments/bridge/{env}", headers="env",
                            success=ENVIRONMENTS_SUCCESS)

    async def reconnect_session(self, environment_id: str, session_id: str) -> str:
        """E7: re-queue the session for a fresh work item. Tries the id as given, then its ``cse_``
        re-tag (docs/protocol.md §2); returns the id that worked."""
        env = validate_id(environment_id, "environment")
        candidates = [validate_id(session_id, "session")]
        infra = to_infra_session_id(session_id)
        if infra != session_id:
            candidates.append(infra)
        for i, candidate in enumerate(candidates):
            try:
                await self._request("POST", f"/v1/environments/{env}/bridge/reconnect", headers="env",
                                    json={"session_id": candidate}, success=ENVIRONMENTS_SUCCESS)
                return candidate
            except BridgeFatalError as exc:
                if exc.status != 404 or i == len(candidates) - 1:
                    raise
        raise AssertionError("unreachable")

    async def archive_session(self, session_id: str, reason: str | None = None) -> bool:
        """E8/S4 with the ``session_*`` compat id, and why (a Tether server records ``reason``,
        tether.protocol.archive). True when archived now, False when it already was (409 counts
        as success)."""
        sid = validate_id(to_compat_session_id(session_id), "session")
        try:
            await self._request("POST", f"/v1/sessions/{sid}/archive", headers="env",
                                json={"reason": reason} if reason else {},
                                success=GENERAL_SUCCESS)
        except ApiError as exc:
            if exc.status == 409:
                return False
            raise
        return True

    async def send_permission_response(self, session_id: str, event: Mapping[str, Any],
                                       session_token: str) -> None:
        """E9: a ``control_response`` event posted with the worker token."""
        sid = validate_id(session_id, "session")
        await self._request("POST", f"/v1/sessions/{sid}/events", headers="env", auth=session_token,
                            json={"events": [dict(event)]}, success=GENERAL_SUCCESS)

    # ---- Sessions API (S1–S7) -------------------------------------------------------------------
    async def create_session(self, *, environment_id: str | None, title: str | None = None,
                             permission_mode: str | None = None, events: list[dict[str, Any]] | None = None,
                             session_context: Mapping[str, Any] | None = None,
                             source: str = "remote-control", target: str | None = None) -> dict[str, Any]:
        """S1 → the session resource (``id`` is ``session_…``). ``target="runner"``: the server
        puts the session on one of the organisation's online runners."""
        body: dict[str, Any] = {
            "events": [{"type": "event", "data": e} for e in (events or [])],
            "session_context": dict(session_context or {}),
            "source": source,
        }
        if environment_id is not None:
            body["environment_id"] = validate_id(environment_id, "environment")
        if target is not None:
            body["target"] = target
        if title is not None:
            body["title"] = title
        if permission_mode is not None:
            body["permission_mode"] = permission_mode
        resp = await self._request("POST", "/v1/sessions", headers="sessions", json=body,
                                   timeout=REGISTER_TIMEOUT_S)
        session = _object(resp)
        validate_id(session.get("id"), "session")
        return session

    async def get_session(self, session_id: str) -> dict[str, Any]:
        """S2."""
        sid = validate_id(to_compat_session_id(session_id), "session")
        return _object(await self._request("GET", f"/v1/sessions/{sid}", headers="sessions"))

    async def update_session_title(self, session_id: str, title: str, *, explicit: bool = True) -> dict[str, Any]:
        """S3. ``explicit=False`` (Tether extension) offers a derived title: the server keeps a title
        a person chose and answers with it; a derived title never becomes an explicit one."""
        sid = validate_id(to_compat_session_id(session_id), "session")
        body: dict[str, Any] = {"title": title}
        if not explicit:
            body["explicit"] = False
        return _object(await self._request("PATCH", f"/v1/sessions/{sid}", headers="sessions", json=body))

    async def send_events(self, session_id: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        """S5: user messages (and client control messages) into the session."""
        sid = validate_id(to_compat_session_id(session_id), "session")
        return _object(await self._request("POST", f"/v1/sessions/{sid}/events", headers="sessions",
                                           json={"events": events}, timeout=SEND_EVENTS_TIMEOUT_S))

    async def list_events(self, session_id: str, *, limit: int = 100, before_id: str | None = None,
                          after_id: str | None = None) -> dict[str, Any]:
        """S6: ``{data, has_more, first_id, last_id}``; newest page unless ``before_id``/``after_id``."""
        sid = validate_id(to_compat_session_id(session_id), "session")
        params: dict[str, str | int] = {"limit": limit}
        if before_id is not None:
            params["before_id"] = validate_id(before_id, "event")
        elif after_id is not None:
            params["after_id"] = validate_id(after_id, "event")
        else:
            params["anchor_to_latest"] = "true"
        return _object(await self._request("GET", f"/v1/sessions/{sid}/events", headers="sessions",
                                           params=params))

    async def list_sessions(self, *, limit: int = 100, environment_id: str | None = None,
                            status: str | None = None) -> dict[str, Any]:
        """S7: ``{data, has_more, first_id, last_id}``."""
        params: dict[str, str | int] = {"limit": limit}
        if environment_id is not None:
            params["environment_id"] = validate_id(environment_id, "environment")
        if status is not None:
            params["status"] = status
        return _object(await self._request("GET", "/v1/sessions", headers="sessions", params=params))

    # ---- Code sessions (C1, C2; env-less) ---------------------------------------------------------
    async def create_code_session(self, *, title: str | None, tags: list[str] | None = None) -> str:
        """C1 → the ``cse_…`` id. ``bridge: {}`` is mandatory (docs/protocol.md §3.4)."""
        body: dict[str, Any] = {"title": title or "", "bridge": {}}
        if tags:
            body["tags"] = list(tags)
        resp = await self._request("POST", "/v1/code/sessions", headers="plain", json=body,
                                   timeout=REGISTER_TIMEOUT_S)
        session = _object(resp).get("session")
        sid = session.get("id") if isinstance(session, dict) else None
        if not isinstance(sid, str) or not sid.startswith("cse_"):
            raise ProtocolError(f"POST /v1/code/sessions answered without a cse_ session id: {sid!r}.")
        return validate_id(sid, "session")

    async def bridge_code_session(self, session_id: str) -> WorkerCredentials:
        """C2: a worker token for the session; every call bumps the worker epoch."""
        sid = validate_id(to_infra_session_id(session_id), "session")
        body = _object(await self._request("POST", f"/v1/code/sessions/{sid}/bridge", headers="plain", json={}))
        jwt, expires, base = body.get("worker_jwt"), body.get("expires_in"), body.get("api_base_url")
        if not isinstance(jwt, str) or not jwt:
            raise ProtocolError("/bridge answered without a worker_jwt.")
        if isinstance(expires, bool) or not isinstance(expires, int | float) or expires <= 0:
            raise ProtocolError("/bridge answered without a positive expires_in.")
        try:
            epoch = parse_epoch(body.get("worker_epoch"))
        except EpochInvalid as exc:
            raise ProtocolError(f"/bridge answered a bad worker_epoch: {exc}") from None
        return WorkerCredentials(jwt, base if isinstance(base, str) and base else None, float(expires), epoch)


def _object(resp: httpx.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        raise ProtocolError(f"{resp.request.method} {resp.request.url.path} answered non-JSON.") from None
    if not isinstance(body, dict):
        raise ProtocolError(f"{resp.request.method} {resp.request.url.path} answered {type(body).__name__}, "
                            "not an object.")
    return body


def _token_pair(resp: httpx.Response) -> TokenPair:
    body = _object(resp)
    access = body.get("access_token")
    if not isinstance(access, str) or not access:
        raise ProtocolError("The token answer lacks an access_token.")
    refresh = body.get("refresh_token")
    expires = body.get("expires_in")
    return TokenPair(
        access_token=access,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
        expires_in=float(expires) if isinstance(expires, int | float) and not isinstance(expires, bool) else None,
        token_type=str(body.get("token_type") or "Bearer"),
    )
