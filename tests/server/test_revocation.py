"""Open sockets do not outlive the privileges they were opened with (issue #11 item 3;
docs/protocol.md §1, §4.7): revoking a token, logging out or lowering a role closes them at
once with 4003, and every client action re-checks the credential.

Real server, real sockets.
"""

from __future__ import annotations

import contextlib
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.support.api import (
    admin_cli,
    assert_error,
    bearer,
    csrf_of,
    device_login,
    dispatch,
    logged_in_web,
    logout,
    mint_token,
    web_login,
    ws_close_code,
)
from tests.support.server import ServerProcess, wait_until
from websockets.sync.client import ClientConnection, connect

INTERRUPT = {"type": "control_request", "request_id": "int-1", "request": {"subtype": "interrupt"}}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def owner(server: ServerProcess) -> str:
    return mint_token(server.data_dir)


@contextlib.contextmanager
def _subscribe(server: ServerProcess, session_id: str, headers: dict[str, str]) -> Iterator[ClientConnection]:
    with connect(f"{server.ws_url}/v1/sessions/ws/{session_id}/subscribe", additional_headers=headers,
                 open_timeout=10) as ws:
        ws.send(json.dumps({"type": "keep_alive"}))  # opened and answering
        while json.loads(ws.recv(timeout=10))["type"] != "keep_alive":
            pass
        yield ws


def _answer(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send a client action; its ack or error frame (fan-out frames are skipped)."""
    ws.send(json.dumps(frame))
    while True:
        reply: dict[str, Any] = json.loads(ws.recv(timeout=10))
        if reply["type"] in ("error", "control_response"):
            return reply


def test_downgrade_to_viewer_closes_the_open_socket(server: ServerProcess, client: httpx.Client, owner: str) -> None:
    member = mint_token(server.data_dir, user="demoted@localhost", role="member")
    member_id = client.get("/v1/me", headers=bearer(member)).json()["user"]["id"]
    d = dispatch(client, owner)
    with _subscribe(server, d.session_id, bearer(member)) as ws, logged_in_web(server) as web:
        assert _answer(ws, INTERRUPT)["type"] == "control_response"  # a member may interrupt
        demoted = web.patch(f"/web/members/{member_id}", json={"role": "viewer"},
                            headers={"x-csrf-token": csrf_of(web)})
        assert demoted.status_code == 200, demoted.text
        assert ws_close_code(ws) == 4003
    # REST agrees, and a new socket is a viewer's: it may watch but not interrupt
    assert_error(client.post(f"/v1/sessions/{d.session_id}/archive", json={}, headers=bearer(member)),
                 403, "permission_error")
    with _subscribe(server, d.session_id, bearer(member)) as ws:
        assert _answer(ws, {**INTERRUPT, "request_id": "int-2"})["error"]["type"] == "permission_error"


def test_revoked_token_closes_its_sockets(server: ServerProcess, client: httpx.Client, owner: str) -> None:
    created = client.post("/v1/tokens", json={"name": "phone"}, headers=bearer(owner)).json()
    token = created["token"]
    d = dispatch(client, owner)
    other = mint_token(server.data_dir, user="bystander@localhost", role="member")
    with _subscribe(server, d.session_id, bearer(token)) as revoked_ws, \
            _subscribe(server, d.session_id, bearer(other)) as bystander, \
            connect(f"{server.ws_url}/v1/session_ingress/ws/{d.cse_id}", additional_headers=bearer(token),
                    open_timeout=10) as repl_ws:
        assert json.loads(repl_ws.recv(timeout=10))["request"]["subtype"] == "initialize"
        assert client.delete(f"/v1/tokens/{created['id']}", headers=bearer(owner)).status_code == 200
        assert ws_close_code(revoked_ws) == 4003
        assert ws_close_code(repl_ws) == 4003
        # another credential's socket on the same session is untouched
        assert _answer(bystander, INTERRUPT)["type"] == "control_response"
    assert_error(client.get("/v1/me", headers=bearer(token)), 401, "authentication_error")


def test_logout_closes_the_browsers_sockets(server: ServerProcess, client: httpx.Client, owner: str) -> None:
    d = dispatch(client, owner)
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        web_login(browser, mint_login_link(server))
        cookie = {"cookie": f"tether_session={browser.cookies['tether_session']}"}
        with _subscribe(server, d.session_id, cookie) as ws:
            assert logout(browser).status_code == 303
            assert ws_close_code(ws) == 4003


def mint_login_link(server: ServerProcess) -> str:
    out = admin_cli(server.data_dir, "login-link", "--port", str(server.port))
    assert out.exit_code == 0, out.output
    link: str = out.stdout.strip()
    return link


def test_every_action_rechecks_the_credential(tmp_path: pathlib.Path) -> None:
    """An access token that expires while its socket is open: nothing pushes a close then, but
    the next client action finds it expired and the socket closes with 4003."""
    with ServerProcess(tmp_path / "short", limits={"rate_per_second": 0}, access_token_ttl_s=3) as srv, \
            httpx.Client(base_url=srv.url, timeout=15) as client, logged_in_web(srv) as web:
        owner = mint_token(srv.data_dir)
        d = dispatch(client, owner)
        access = device_login(client, web)["access_token"]
        with _subscribe(srv, d.session_id, bearer(access)) as ws:
            wait_until(lambda: client.get("/v1/me", headers=bearer(access)).status_code == 401, timeout=15,
                       interval=0.2, message="the access token to expire")
            ws.send(json.dumps(INTERRUPT))
            assert ws_close_code(ws) == 4003
        # no interrupt was logged by the expired credential
        events = client.get(f"/v1/sessions/{d.session_id}/events", headers=bearer(owner)).json()["data"]
        assert all(e.get("type") != "control_request" for e in events), events
