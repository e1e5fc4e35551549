"""The async API client against a real `tether server`: Environments (E1–E9) and Sessions (S1–S7)
calls, header sets (docs/protocol.md §3.1), id validation, the status → error mapping (§3.1), the
device flow, and access-token refresh before expiry and after a 401 (once)."""

from __future__ import annotations

import asyncio
import pathlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from tests.support.api import (
    DEVICE_FLOW_LIMITS,
    approve_device,
    bearer,
    device_login,
    logged_in_web,
)
from tests.support.server import ServerProcess, free_port

from tether import __version__
from tether.client.api import ApiClient, DeviceCode
from tether.client.credentials import Credentials, CredentialStore
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, NotLoggedIn, ProtocolError
from tether.protocol.work_secret import decode_work_secret

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("api"), limits=DEVICE_FLOW_LIMITS) as proc:
        yield proc


@pytest.fixture(scope="module")
def web(server: ServerProcess) -> Iterator[httpx.Client]:
    with logged_in_web(server) as c:
        yield c


@pytest.fixture(scope="module")
def sync(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


class Recorder:
    """An httpx client whose requests are recorded (they still go to the real server)."""

    def __init__(self, base_url: str) -> None:
        self.requests: list[httpx.Request] = []

        async def record(request: httpx.Request) -> None:
            self.requests.append(request)

        self.http = httpx.AsyncClient(base_url=base_url, event_hooks={"request": [record]})

    def last(self, path_part: str) -> httpx.Request:
        return [r for r in self.requests if path_part in r.url.path][-1]


@pytest.fixture
async def rec(server: ServerProcess) -> AsyncIterator[Recorder]:
    r = Recorder(server.url)
    try:
        yield r
    finally:
        await r.http.aclose()


def personal(server: ServerProcess, token: str) -> Credentials:
    return Credentials(server=server.url, access_token=token, kind="personal")


@pytest.fixture
async def api(server: ServerProcess, owner_token: str, rec: Recorder) -> AsyncIterator[ApiClient]:
    async with ApiClient(server.url, personal(server, owner_token), http=rec.http) as client:
        yield client


async def registered(api: ApiClient, **fields: Any) -> Any:
    body: dict[str, Any] = dict(machine_name="test-host", directory="/tmp/project", branch="main",
                                git_repo_url=None, max_sessions=4)
    body.update(fields)
    return await api.register_environment(**body)


async def next_work(api: ApiClient, env_id: str, secret: str) -> Any:
    for _ in range(5):  # each poll is a long poll (≤ 8 s); work is normally there at once
        item = await api.poll_for_work(env_id, secret)
        if item is not None:
            return item
    raise AssertionError("no work item")


def user_event(text: str) -> dict[str, Any]:
    return {"uuid": str(uuid.uuid4()), "session_id": "", "type": "user", "parent_tool_use_id": None,
            "message": {"role": "user", "content": text}}


# ---- Tether additions ---------------------------------------------------------------------------


async def test_me_bridge_config_and_environments(api: ApiClient) -> None:
    me = await api.me()
    assert me["user"]["email"] == "owner@localhost" and me["role"] == "owner"
    assert me["organization_uuid"].startswith("org_") and me["credential"] == "personal"
    config = await api.bridge_config()
    assert not config.poll.fell_back and config.multi_session
    assert config.poll.config.non_exclusive_heartbeat_interval_ms == 60_000
    assert config.poll.config.reclaim_older_than_ms == 5000
    assert config.lease_ttl_seconds == 300
    reg = await registered(api, machine_name="listed-host")
    envs = {e["id"]: e for e in await api.list_environments()}
    assert envs[reg.environment_id]["machine_name"] == "listed-host"
    assert envs[reg.environment_id]["online"] is True
    assert envs[reg.environment_id]["max_sessions"] == 4


async def test_not_logged_in(server: ServerProcess) -> None:
    async with ApiClient(server.url) as anonymous:
        with pytest.raises(NotLoggedIn, match="tether login"):
            await anonymous.me()
        code = await anonymous.request_device_code()  # OAuth needs no credential
        assert code.user_code


# ---- Environments API -----------------------------------------------------------------------------


async def test_environment_lifecycle(api: ApiClient) -> None:
    reg = await registered(api)
    assert reg.environment_id.startswith("env_") and reg.environment_secret and not reg.reattached
    again = await registered(api, environment_id=reg.environment_id)
    assert again.reattached and again.environment_id == reg.environment_id

    session = await api.create_session(environment_id=reg.environment_id, title="lifecycle")
    item = await next_work(api, reg.environment_id, again.environment_secret)
    assert item.data_type == "session" and item.data_id.split("_")[-1] == session["id"].split("_")[-1]
    assert item.environment_id == reg.environment_id and item.state
    token = decode_work_secret(item.secret).session_ingress_token

    await api.acknowledge_work(reg.environment_id, item.id, token)
    beat = await api.heartbeat_work(reg.environment_id, item.id, token)
    assert beat.lease_extended and beat.ttl_seconds == 300 and beat.state

    # E7 re-dispatches: the old item is superseded (410, fatal, expired) and a fresh one arrives
    used = await api.reconnect_session(reg.environment_id, session["id"])
    assert used == session["id"]
    with pytest.raises(BridgeFatalError) as gone:
        await api.heartbeat_work(reg.environment_id, item.id, token)
    assert gone.value.status == 410 and gone.value.expired
    fresh = await next_work(api, reg.environment_id, again.environment_secret)
    assert fresh.id != item.id
    await api.stop_work(reg.environment_id, fresh.id, force=True)

    # E8: archive, and 409 "already archived" counts as success
    assert await api.archive_session(session["id"]) is True
    assert await api.archive_session(session["id"].replace("session_", "cse_")) is False
    assert (await api.get_session(session["id"]))["session_status"] == "archived"

    await api.deregister_environment(reg.environment_id)
    with pytest.raises(BridgeFatalError) as lost:
        await api.poll_for_work(reg.environment_id, again.environment_secret)
    assert lost.value.status == 404 and lost.value.fatal


async def test_reconnect_accepts_either_costume(api: ApiClient) -> None:
    reg = await registered(api)
    session = await api.create_session(environment_id=reg.environment_id)
    infra = session["id"].replace("session_", "cse_")
    assert await api.reconnect_session(reg.environment_id, infra) == infra
    with pytest.raises(BridgeFatalError) as err:
        await api.reconnect_session(reg.environment_id, "session_" + "0" * 26)
    assert err.value.status == 404


async def test_permission_response_with_worker_token(api: ApiClient) -> None:
    reg = await registered(api)
    session = await api.create_session(environment_id=reg.environment_id)
    item = await next_work(api, reg.environment_id, reg.environment_secret)
    token = decode_work_secret(item.secret).session_ingress_token
    answer = {"type": "control_response", "uuid": str(uuid.uuid4()),
              "response": {"subtype": "success", "request_id": "req-unknown",
                           "response": {"behavior": "allow", "updatedInput": {}}}}
    with pytest.raises(BridgeFatalError) as err:  # E9 reaches the server with the worker token
        await api.send_permission_response(session["id"], answer, token)
    assert err.value.status == 404 and "req-unknown" in err.value.message


# ---- Sessions API ---------------------------------------------------------------------------------


async def test_sessions_api(api: ApiClient) -> None:
    reg = await registered(api)
    session = await api.create_session(environment_id=reg.environment_id, title="first title",
                                       permission_mode="acceptEdits",
                                       session_context={"sources": [], "outcomes": [], "model": "m"})
    sid = session["id"]
    assert sid.startswith("session_") and session["title"] == "first title"
    assert (await api.get_session(sid))["environment_id"] == reg.environment_id
    assert (await api.update_session_title(sid.replace("session_", "cse_"), "renamed"))["title"] == "renamed"

    event = user_event("hello there")
    sent = await api.send_events(sid, [event])
    assert sent["events"][0]["uuid"] == event["uuid"]
    page = await api.list_events(sid)
    assert any(e.get("uuid") == event["uuid"] for e in page["data"]) and page["last_id"]
    assert (await api.list_events(sid, after_id=page["last_id"]))["data"] == []
    listed = await api.list_sessions(environment_id=reg.environment_id)
    assert [s["id"] for s in listed["data"]] == [sid]
    assert sid not in [s["id"] for s in (await api.list_sessions(status="archived"))["data"]]


async def test_code_sessions_and_derived_titles(api: ApiClient) -> None:
    """C1 (with the mirror tag), C2 twice (each bumps the epoch), and derived vs explicit titles."""
    cse = await api.create_code_session(title="env-less", tags=["ccr-mirror"])
    assert cse.startswith("cse_")
    first = await api.bridge_code_session(cse)
    second = await api.bridge_code_session(cse.replace("cse_", "session_"))
    assert first.worker_jwt and first.expires_in > 0 and second.worker_epoch == first.worker_epoch + 1
    assert first.api_base_url == api.server
    session = await api.get_session(cse)
    assert session["tags"] == ["ccr-mirror"] and session["title"] == "env-less"
    assert (await api.update_session_title(cse, "derived", explicit=False))["title"] == "env-less"
    fresh = await api.create_code_session(title=None)
    assert (await api.update_session_title(fresh, "derived", explicit=False))["title"] == "derived"
    assert (await api.update_session_title(fresh, "chosen"))["title"] == "chosen"
    assert (await api.update_session_title(fresh, "derived again", explicit=False))["title"] == "chosen"
    assert await api.access_token() == api.current_access_token


# ---- headers (docs/protocol.md §3.1) ---------------------------------------------------------------------


async def test_header_sets(api: ApiClient, rec: Recorder, owner_token: str) -> None:
    reg = await registered(api)
    env_req = rec.last("/v1/environments/bridge")
    assert env_req.headers["authorization"] == f"Bearer {owner_token}"
    assert env_req.headers["anthropic-version"] == "2023-06-01"
    assert env_req.headers["anthropic-beta"] == "environments-2025-11-01"
    assert env_req.headers["x-environment-runner-version"] == __version__
    assert env_req.headers["content-type"] == "application/json"
    assert "x-organization-uuid" not in env_req.headers  # the environments client never sends it

    session = await api.create_session(environment_id=reg.environment_id)
    org = (await api.me())["organization_uuid"]
    sess_req = rec.last("/v1/sessions")
    assert sess_req.headers["anthropic-beta"] == "ccr-byoc-2025-07-29"
    assert sess_req.headers["x-organization-uuid"] == org
    assert "x-environment-runner-version" not in sess_req.headers

    item = await next_work(api, reg.environment_id, reg.environment_secret)
    poll_req = rec.last("/work/poll")
    assert poll_req.headers["authorization"] == f"Bearer {reg.environment_secret}"
    assert poll_req.headers["anthropic-beta"] == "environments-2025-11-01"
    assert poll_req.url.params.get("reclaim_older_than_ms") is None
    await api.create_session(environment_id=reg.environment_id)  # queued work: the poll answers at once
    assert await api.poll_for_work(reg.environment_id, reg.environment_secret, reclaim_older_than_ms=1234)
    assert rec.last("/work/poll").url.params["reclaim_older_than_ms"] == "1234"

    token = decode_work_secret(item.secret).session_ingress_token
    await api.acknowledge_work(reg.environment_id, item.id, token)
    assert rec.last("/ack").headers["authorization"] == f"Bearer {token}"

    await api.archive_session(session["id"])
    arch = rec.last("/archive")
    assert arch.headers["anthropic-beta"] == "environments-2025-11-01"  # E8 uses ENV-OAUTH

    await api.request_device_code()
    oauth = rec.last("/oauth/device/code")
    assert "authorization" not in oauth.headers and "anthropic-version" not in oauth.headers
    assert oauth.headers["user-agent"] == f"tether/{__version__}"


async def test_org_header_learned_lazily(server: ServerProcess, owner_token: str, rec: Recorder) -> None:
    async with ApiClient(server.url, personal(server, owner_token), http=rec.http) as fresh:
        await fresh.list_sessions(limit=1)
    paths = [r.url.path for r in rec.requests]
    assert paths == ["/v1/me", "/v1/sessions"]
    assert rec.requests[1].headers["x-organization-uuid"].startswith("org_")


# ---- ids and errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "x?y=1", "spaced id", "é", "%2e%2e", "a" * 300])
async def test_invalid_ids_are_refused_before_sending(api: ApiClient, rec: Recorder, bad: str) -> None:
    calls = [
        api.poll_for_work(bad, "tes_x"),
        api.acknowledge_work(bad, "work_x", "t"),
        api.acknowledge_work("env_x", bad, "t"),
        api.stop_work("env_x", bad, force=False),
        api.heartbeat_work(bad, "work_x", "t"),
        api.deregister_environment(bad),
        api.reconnect_session("env_x", bad),
        api.archive_session(bad),
        api.get_session(bad),
        api.send_events(bad, []),
        api.register_environment(machine_name="m", directory="/", branch=None, git_repo_url=None,
                                 max_sessions=1, environment_id=bad),
    ]
    for call in calls:
        with pytest.raises(ProtocolError, match="invalid"):
            await call
    assert rec.requests == []


async def test_status_mapping(api: ApiClient, server: ServerProcess) -> None:
    # 400 → ApiError, not fatal
    with pytest.raises(ApiError) as bad:
        await registered(api, max_sessions=0)
    assert not bad.value.fatal and bad.value.status == 400 and bad.value.error_type == "invalid_request_error"
    assert not isinstance(bad.value, BridgeFatalError)
    # 404 → fatal
    with pytest.raises(BridgeFatalError) as missing:
        await api.stop_work("env_" + "0" * 26, "work_" + "0" * 26, force=False)
    assert missing.value.status == 404 and missing.value.error_type == "not_found_error"
    # 401 with an environment secret: fatal, never refreshed
    reg = await registered(api)
    with pytest.raises(BridgeFatalError) as unauth:
        await api.poll_for_work(reg.environment_id, "tes_wrong")
    assert unauth.value.status == 401 and "tether login" in unauth.value.message
    # 409 outside archive → ApiError
    session = await api.create_session(environment_id=reg.environment_id)
    await api.archive_session(session["id"])
    with pytest.raises(ApiError) as conflict:
        await api.send_events(session["id"], [user_event("late")])
    assert conflict.value.status == 409 and conflict.value.error_type == "already_archived"


async def test_policy_denied_is_fatal(server: ServerProcess, sync: httpx.Client) -> None:
    token = server.token(org="no-rc", user="owner@no-rc")
    resp = await asyncio.to_thread(sync.put, "/v1/org/policy", json={"allow_remote_control": False},
                                   headers=bearer(token))
    assert resp.status_code == 200, resp.text
    async with ApiClient(server.url, personal(server, token)) as api:
        with pytest.raises(BridgeFatalError) as denied:
            await registered(api)
    assert denied.value.status == 403 and denied.value.error_type == "policy_denied"
    assert "policy" in denied.value.message


async def test_unreachable_server() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with ApiClient(url, Credentials(server=url, access_token="tpt_x", kind="personal")) as api:
        with pytest.raises(ApiUnavailable) as down:
            await api.me()
    assert down.value.kind == "connection" and url in down.value.message


# ---- device flow ----------------------------------------------------------------------------------


async def test_device_flow(server: ServerProcess, web: httpx.Client) -> None:
    async with ApiClient(server.url) as api:
        first = await api.request_device_code()
        assert first.verification_uri == f"{server.url}/device" and first.interval == 1.0
        with pytest.raises(ApiError) as pending:
            await api.exchange_device_code(first.device_code)
        assert pending.value.error_type == "authorization_pending" and not pending.value.fatal

        code = await api.request_device_code()

        sleeps: list[float] = []

        async def sleep(seconds: float) -> None:
            sleeps.append(seconds)
            if len(sleeps) == 3:  # approve in the browser while the CLI "waits"
                assert approve_device(web, code.user_code).status_code == 200

        # no real waiting: the second poll comes too fast → slow_down → the interval grows by 5 s
        pair = await api.wait_for_device_token(code, sleep=sleep)
        assert sleeps == [1.0, 1.0, 6.0]
        assert pair.access_token.startswith("tat_") and pair.refresh_token and pair.expires_in == 3600
        creds = api.credentials_from(pair, issued_at=1000.0)
        assert creds.expires_at == 4600.0 and creds.can_refresh


async def test_device_flow_denied_and_expired(server: ServerProcess, web: httpx.Client) -> None:
    async with ApiClient(server.url) as api:
        code = await api.request_device_code()
        assert approve_device(web, code.user_code, action="deny").status_code == 200

        async def no_wait(seconds: float) -> None:
            return None

        with pytest.raises(ApiError) as denied:
            await api.wait_for_device_token(code, sleep=no_wait)
        assert denied.value.error_type == "access_denied" and "denied" in denied.value.message

        pending = await api.request_device_code()
        short = DeviceCode(pending.device_code, pending.user_code, pending.verification_uri,
                           pending.verification_uri_complete, expires_in=3.0, interval=1.0)
        clock = iter(float(i) for i in range(100))
        with pytest.raises(ApiError) as expired:
            await api.wait_for_device_token(short, sleep=no_wait, monotonic=lambda: next(clock))
        assert expired.value.error_type == "expired_token" and "tether login" in expired.value.message


# ---- token refresh --------------------------------------------------------------------------------


def stored_login(server: ServerProcess, sync: httpx.Client, web: httpx.Client, home: pathlib.Path,
                 *, issued_at: float = 1000.0) -> tuple[CredentialStore, Credentials]:
    pair = device_login(sync, web)
    me = sync.get("/v1/me", headers=bearer(pair["access_token"])).json()
    creds = Credentials(server=server.url, access_token=pair["access_token"], refresh_token=pair["refresh_token"],
                        expires_at=issued_at + pair["expires_in"], issued_at=issued_at).with_identity(me)
    store = CredentialStore(home, environ={})
    store.save(creds)
    return store, creds


def refresh_is_dead(sync: httpx.Client, refresh_token: str) -> bool:
    resp = sync.post("/oauth/token", data={"grant_type": "refresh_token", "refresh_token": refresh_token})
    return resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_grant"


async def test_refresh_before_expiry(server: ServerProcess, sync: httpx.Client, web: httpx.Client,
                                     tmp_path: pathlib.Path) -> None:
    store, creds = stored_login(server, sync, web, tmp_path)
    assert creds.expires_at is not None
    now = creds.expires_at - 1000  # 1 h token, 5 min margin: not due yet
    async with ApiClient(server.url, creds, store=store, clock=lambda: now) as api:
        await api.me()
        assert api.refresh_count == 0
        now = creds.expires_at - 60  # inside the margin
        await asyncio.gather(api.me(), api.list_environments(), api.me())
        assert api.refresh_count == 1  # concurrent callers share one refresh
        current = api.credentials
    assert current is not None and current.access_token != creds.access_token
    assert current.expires_at == now + 3600 and current.user_id == creds.user_id
    assert store.read_file() == current  # rotated tokens are written back, still 0600
    assert (store.path.stat().st_mode & 0o777) == 0o600
    assert (await asyncio.to_thread(sync.get, "/v1/me", headers=bearer(current.access_token))).status_code == 200


async def test_refresh_after_401_once(server: ServerProcess, sync: httpx.Client, web: httpx.Client,
                                      tmp_path: pathlib.Path, rec: Recorder) -> None:
    store, creds = stored_login(server, sync, web, tmp_path)
    broken = creds.with_tokens("tat_not-a-real-token", creds.refresh_token, creds.expires_at, creds.issued_at)
    async with ApiClient(server.url, broken, store=store, clock=lambda: 2000.0, http=rec.http) as api:
        reg = await registered(api)  # 401 → refresh → retried once with the new token
        assert reg.environment_id and api.refresh_count == 1
    assert [r.url.path for r in rec.requests] == ["/v1/environments/bridge", "/oauth/token",
                                                  "/v1/environments/bridge"]
    stored = store.read_file()
    assert stored is not None and stored.access_token not in (broken.access_token, creds.access_token)


async def test_personal_token_401_is_fatal_without_refresh(server: ServerProcess, rec: Recorder) -> None:
    async with ApiClient(server.url, personal(server, "tpt_revoked-or-wrong"), http=rec.http) as api:
        with pytest.raises(BridgeFatalError) as err:
            await api.me()
    assert err.value.status == 401 and [r.url.path for r in rec.requests] == ["/v1/me"]


async def test_revoked_login_is_fatal(server: ServerProcess, sync: httpx.Client, web: httpx.Client,
                                      tmp_path: pathlib.Path, rec: Recorder) -> None:
    store, creds = stored_login(server, sync, web, tmp_path)
    assert creds.refresh_token
    assert (await asyncio.to_thread(sync.post, "/oauth/revoke", data={"token": creds.refresh_token})
            ).status_code == 200
    async with ApiClient(server.url, creds, store=store, clock=lambda: 2000.0, http=rec.http) as api:
        with pytest.raises(BridgeFatalError) as err:
            await api.me()  # 401 (the family is revoked) → refresh → invalid_grant → fatal, once
    assert err.value.status == 401 and err.value.expired and "tether login" in err.value.message
    assert [r.url.path for r in rec.requests] == ["/v1/me", "/oauth/token"]


async def test_two_processes_share_one_rotation(server: ServerProcess, sync: httpx.Client, web: httpx.Client,
                                                tmp_path: pathlib.Path) -> None:
    """Two clients (as two bridges would) with the same stored login, both due for a refresh:
    the second adopts what the first stored instead of re-using the rotated refresh token
    (which would revoke the whole login)."""
    store, creds = stored_login(server, sync, web, tmp_path)
    assert creds.expires_at is not None
    now = creds.expires_at - 10
    a = ApiClient(server.url, creds, store=CredentialStore(tmp_path, environ={}), clock=lambda: now)
    b = ApiClient(server.url, creds, store=CredentialStore(tmp_path, environ={}), clock=lambda: now)
    async with a, b:
        await asyncio.gather(a.me(), b.me())
        assert a.refresh_count + b.refresh_count == 1
        assert a.credentials == b.credentials == store.read_file()
        await a.me()
    final = store.read_file()
    assert final is not None and final.refresh_token
    resp = await asyncio.to_thread(sync.post, "/oauth/token",
                                   data={"grant_type": "refresh_token", "refresh_token": final.refresh_token})
    assert resp.status_code == 200, resp.text  # the login survived...
    assert refresh_is_dead(sync, creds.refresh_token or "")  # ...and the first token was rotated away


async def test_refresh_does_not_resurrect_a_logged_out_file(server: ServerProcess, sync: httpx.Client,
                                                            web: httpx.Client, tmp_path: pathlib.Path) -> None:
    store, creds = stored_login(server, sync, web, tmp_path)
    assert creds.expires_at is not None
    store.delete()
    async with ApiClient(server.url, creds, store=store, clock=lambda: creds.expires_at or 0.0) as api:
        await api.me()
        assert api.refresh_count == 1
    assert not store.path.exists()
