"""Small helpers for driving a real server over HTTP (sync httpx).

Everything here talks to a running :class:`tests.support.server.ServerProcess`; nothing is mocked.

- :func:`bearer` / :func:`assert_error` — headers and the one error shape (docs/protocol.md §3).
- :func:`register_environment`, :func:`create_session`, :func:`poll_work` — the env-based flow.
- :func:`dispatch` — register + create a session on it + poll → a :class:`Dispatched` with the
  worker token (``session_ingress_token`` of the decoded work secret).
- :func:`web_login` / :func:`csrf_of` — a cookie session in an ``httpx.Client`` and its CSRF token;
  :func:`password_login` / :func:`logout` — the login and log-out forms with their CSRF fields.
- :func:`logged_in_web` — a browser logged in through the server's login link (it approves device codes).
- :func:`device_login` — the OAuth device flow end to end → access + refresh tokens.
- :func:`mint_token` / :func:`admin_cli` — ``tether admin`` in-process (fast) for test setup.
"""

from __future__ import annotations

import contextlib
import pathlib
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.server import ServerProcess, database_url_of
from tether.protocol.work_secret import decode_work_secret

# Every error.type the server may answer with (docs/protocol.md §3 and the OAuth codes of RFC 6749/8628).
ERROR_TYPES = frozenset({
    "invalid_request_error", "authentication_error", "permission_error", "policy_denied", "not_found_error",
    "conflict_error", "epoch_superseded", "already_archived", "already_resolved", "environment_expired",
    "work_gone", "payload_too_large", "rate_limit_error",
    "authorization_pending", "slow_down", "expired_token", "access_denied", "invalid_grant",
    "unsupported_grant_type",
})


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def assert_error(resp: httpx.Response, status: int, error_type: str | None = None) -> dict[str, Any]:
    """``resp`` is ``status`` with exactly ``{"type":"error","error":{"type","message"}}``; returns the error."""
    assert resp.status_code == status, f"{resp.request.method} {resp.request.url}: {resp.status_code} {resp.text[:500]}"
    assert resp.headers.get("content-type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert isinstance(body, dict) and set(body) == {"type", "error"} and body["type"] == "error", body
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"type", "message"}, body
    assert isinstance(error["type"], str) and isinstance(error["message"], str) and error["message"], body
    assert error["type"] in ERROR_TYPES, body
    if error_type is not None:
        assert error["type"] == error_type, body
    return error


def register_environment(client: httpx.Client, token: str, **fields: Any) -> tuple[str, str]:
    """E1 → ``(environment_id, environment_secret)``."""
    body = {"machine_name": "test-host", "directory": "/tmp/project", "branch": "main", "git_repo_url": None,
            "max_sessions": 4, "metadata": {"worker_type": "claude_code"}, **fields}
    resp = client.post("/v1/environments/bridge", json=body, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    data = resp.json()
    return data["environment_id"], data["environment_secret"]


def create_session(client: httpx.Client, token: str, environment_id: str | None = None,
                   **fields: Any) -> dict[str, Any]:
    """S1 → the session resource (``id`` is ``session_…``)."""
    body: dict[str, Any] = {"title": "test", "events": [], **fields}
    if environment_id is not None:
        body["environment_id"] = environment_id
    resp = client.post("/v1/sessions", json=body, headers=bearer(token))
    assert resp.status_code in (200, 201), resp.text
    data: dict[str, Any] = resp.json()
    return data


def poll_work(client: httpx.Client, environment_id: str, secret: str, timeout: float = 20.0) -> dict[str, Any]:
    """E2 until a work item arrives (the poll is a long poll; ``null`` means none yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = client.get(f"/v1/environments/{environment_id}/work/poll", headers=bearer(secret), timeout=15)
        assert resp.status_code == 200, resp.text
        item = resp.json()
        if item:
            assert isinstance(item, dict)
            return item
    raise TimeoutError("no work item was delivered")


@dataclass(frozen=True)
class Dispatched:
    environment_id: str
    environment_secret: str
    session_id: str  # session_<body>
    work: dict[str, Any]
    worker_token: str

    @property
    def body(self) -> str:
        return self.session_id.split("_", 1)[1]

    @property
    def cse_id(self) -> str:
        return f"cse_{self.body}"


def dispatch(client: httpx.Client, token: str) -> Dispatched:
    """Register an environment, create a session on it, poll its work item, decode the worker token."""
    env_id, secret = register_environment(client, token)
    session = create_session(client, token, env_id)
    work = poll_work(client, env_id, secret)
    assert work["data"]["id"].split("_", 1)[1] == session["id"].split("_", 1)[1], work
    ingress = decode_work_secret(work["secret"]).session_ingress_token
    return Dispatched(env_id, secret, session["id"], work, ingress)


_CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')


def csrf_of(client: httpx.Client) -> str:
    """The CSRF token of the client's web session (the hidden field of the /device form)."""
    resp = client.get("/device")
    assert resp.status_code == 200, resp.text
    match = _CSRF.search(resp.text)
    assert match, resp.text
    return match.group(1)


def login_form_csrf(client: httpx.Client) -> str:
    """The CSRF field of the /login form (bound to the pre-login cookie the GET sets)."""
    resp = client.get("/login")
    assert resp.status_code == 200, resp.text
    match = _CSRF.search(resp.text)
    assert match, resp.text
    return match.group(1)


def password_login(client: httpx.Client, email: str, password: str, **fields: str) -> httpx.Response:
    """Submit the /login form as a browser does: GET the form (cookie + CSRF field), then POST it."""
    data = {"csrf": login_form_csrf(client), "email": email, "password": password, **fields}
    return client.post("/login", data=data)


def logout(client: httpx.Client) -> httpx.Response:
    """The nav's log-out form, with its CSRF field."""
    return client.post("/logout", data={"csrf": csrf_of(client)})


def web_login(client: httpx.Client, link: str) -> None:
    """Follow a one-time login link; ``client`` then holds the session cookie."""
    path = link.split("://", 1)[-1].split("/", 1)[1]
    resp = client.get("/" + path, follow_redirects=False)
    assert resp.status_code == 303, resp.text
    assert "tether_session" in client.cookies, resp.headers


@contextlib.contextmanager
def logged_in_web(server: ServerProcess) -> Iterator[httpx.Client]:
    """A browser: logged in once through the login link the server printed."""
    with httpx.Client(base_url=server.url, timeout=15) as client:
        assert server.login_link
        web_login(client, server.login_link)
        yield client


DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# Server limits for modules that run the device flow many times: no rate limit, no practical
# per-IP login cap, and 1 s polls so a CLI waiting for approval does not idle for 5 s.
DEVICE_FLOW_LIMITS: dict[str, Any] = {"rate_per_second": 0, "login_per_minute": 10_000, "device_poll_interval_s": 1}


def approve_device(web: httpx.Client, user_code: str, action: str = "approve") -> httpx.Response:
    """Submit the /device form of a logged-in web client (with its CSRF hidden field)."""
    return web.post("/device", data={"csrf": csrf_of(web), "user_code": user_code, "action": action})


def device_login(client: httpx.Client, web: httpx.Client) -> dict[str, Any]:
    """The whole device flow: code → approval by ``web`` → ``/oauth/token`` → access + refresh."""
    code = client.post("/oauth/device/code", json={"client_id": "tests"})
    assert code.status_code == 200, code.text
    page = approve_device(web, code.json()["user_code"])
    assert page.status_code == 200 and "approved" in page.text, page.text
    resp = client.post("/oauth/token", data={"grant_type": DEVICE_GRANT, "device_code": code.json()["device_code"]})
    assert resp.status_code == 200, resp.text
    pair: dict[str, Any] = resp.json()
    return pair


def ws_close_code(ws: Any, timeout: float = 10.0) -> int | None:
    """Read a ``websockets.sync`` connection until it closes; the close code the server sent."""
    from websockets.exceptions import ConnectionClosed

    deadline = time.monotonic() + timeout
    try:
        while True:
            ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


def admin_cli(data_dir: pathlib.Path, *args: str, stdin: str | None = None) -> Any:
    """``tether admin ARGS --data-dir DATA_DIR`` run in-process with Typer's ``CliRunner`` (the same
    command code as the subprocess, without ~1 s of interpreter start and imports). Returns the
    ``typer.testing.Result``; use it from sync tests only (the command calls ``asyncio.run``)."""
    from typer.testing import CliRunner

    from tether.cli import main

    env = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb", "TETHER_CONFIG_JSON": ""}
    database_url = database_url_of(data_dir)
    if database_url:
        env["TETHER_DATABASE_URL"] = database_url
    return CliRunner().invoke(main.app, ["admin", *args, "--data-dir", str(data_dir)], input=stdin, env=env)


def mint_token(data_dir: pathlib.Path, *, org: str = "default", user: str = "owner@localhost",
               role: str = "owner") -> str:
    """A personal API token via ``tether admin token create`` (in-process, see :func:`admin_cli`)."""
    result = admin_cli(data_dir, "token", "create", "--org", org, "--user", user, "--role", role)
    assert result.exit_code == 0, result.output
    token: str = result.stdout.strip()
    return token


def _with_auth(data_dir: pathlib.Path, body: Any) -> Any:
    """Run ``body(store, auth)`` against a server's data directory, in-process (as `tether admin` does)."""
    import asyncio

    from tether.server.auth.service import Auth
    from tether.server.config import Config
    from tether.server.store import Store

    async def main() -> Any:
        cfg = Config(data_dir=data_dir, database_url=database_url_of(data_dir))
        store = Store(cfg.db_url)
        try:
            await store.open()
            auth = Auth(cfg, store)
            await auth.open()
            return await body(store, auth)
        finally:
            await store.close()

    return asyncio.run(main())


def expired_user_token(data_dir: pathlib.Path, email: str = "owner@localhost") -> str:
    """A personal API token of ``email`` that expired a minute ago (issued with the server's own store)."""
    async def body(store: Any, auth: Any) -> str:
        async with store.write() as tx:
            user = await tx.users.by_email(email)
            assert user is not None, email
            issued = await auth.issue(tx, "personal", user, ttl=-60, name="expired")
        return str(issued.secret)

    result: str = _with_auth(data_dir, body)
    return result


def expired_worker_token(data_dir: pathlib.Path, worker_token: str) -> str:
    """``worker_token`` re-signed with the server's key, expired a minute ago (every other claim kept)."""
    import jwt

    async def body(store: Any, auth: Any) -> dict[str, str]:
        return dict(auth.keys.keys)

    keys = _with_auth(data_dir, body)
    header = jwt.get_unverified_header(worker_token)
    claims = jwt.decode(worker_token, options={"verify_signature": False})
    claims.update(iat=int(time.time()) - 120, exp=int(time.time()) - 60)
    return jwt.encode(claims, keys[header["kid"]], algorithm="HS256", headers={"kid": header["kid"]})
