"""The authorization matrix: every route family × every kind of caller → the documented answer
(docs/protocol.md §1, §3, §4.4, §4.7), generated from the one table below.

Callers: the session's own organisation by role; another organisation's owner and viewer (a
resource of another org is 404 whatever the role: no existence oracle); the session's worker
token; the worker token of another session; and forged, expired, revoked and missing
credentials. On user routes those last four are personal API tokens; on worker routes they are
worker tokens (forged: signed with another key; revoked: its work item was stopped → 410).

Cells are HTTP statuses, or for the WebSockets ``open`` / the close code. Everything runs
against a real `tether server` process.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from tests.support.api import (
    Dispatched,
    bearer,
    create_session,
    dispatch,
    expired_user_token,
    expired_worker_token,
    mint_token,
)
from tests.support.server import ServerProcess
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

MATRIX = """
route               owner  member viewer other_owner other_viewer worker worker_elsewhere forged expired revoked none
me                  200    200    200    200         200          401    401             401    401     401     401
sessions.list       200    200    200    200         200          401    401             401    401     401     401
session.get         200    200    200    404         404          401    401             401    401     401     401
session.events      200    200    200    404         404          401    401             401    401     401     401
session.permissions 200    200    200    404         404          401    401             401    401     401     401
session.patch       200    200    403    404         404          401    401             401    401     401     401
session.prompt      200    200    403    404         404          400    401             401    401     401     401
session.archive     200    200    403    404         404          401    401             401    401     401     401
code.bridge         200    200    403    404         404          401    401             401    401     401     401
environments.list   200    200    200    200         200          401    401             401    401     401     401
environment.register 200   200    403    200         403          401    401             401    401     401     401
tokens.list         200    200    200    200         200          401    401             401    401     401     401
audit               200    403    403    200         403          401    401             401    401     401     401
subscribe           open   open   open   4001        4001         4003   4003            4003   4003    4003    4003
ingress.post        200    200    403    404         404          200    401             401    401     410     401
ingress.ws          open   open   4003   4001        4001         open   4003            4003   4003    4003    4003
worker.events       401    401    401    401         401          200    401             401    401     410     401
worker.heartbeat    401    401    401    401         401          200    401             401    401     410     401
worker.get          401    401    401    401         401          200    401             401    401     410     401
worker.stream       401    401    401    401         401          200    401             401    401     410     401
work.heartbeat      401    401    401    401         401          200    404             401    401     410     401
"""

WORKER_ROUTES = {"ingress.post", "ingress.ws", "worker.events", "worker.heartbeat", "worker.get", "worker.stream",
                 "work.heartbeat"}


def _parse(table: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    lines = [line.split() for line in table.strip().splitlines()]
    callers = lines[0][1:]
    rows = {cells[0]: dict(zip(callers, cells[1:], strict=True)) for cells in lines[1:]}
    return callers, rows


CALLERS, EXPECTED = _parse(MATRIX)
CASES = [(route, caller) for route in EXPECTED for caller in CALLERS]


@dataclass
class World:
    server: ServerProcess
    client: httpx.Client
    tokens: dict[str, str]  # caller → user credential (user routes)
    main: Dispatched  # the session every route targets
    elsewhere: Dispatched  # another session of the same org (its worker token is "worker_elsewhere")
    stopped: Dispatched  # a session whose work item was stopped (its token is "revoked" on worker routes)
    forged_worker: str
    expired_worker: str


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    data = server.data_dir
    with httpx.Client(base_url=server.url, timeout=15) as client:
        owner = mint_token(data)
        created = client.post("/v1/tokens", json={"name": "to revoke"}, headers=bearer(owner)).json()
        assert client.delete(f"/v1/tokens/{created['id']}", headers=bearer(owner)).status_code == 200
        tokens = {
            "owner": owner,
            "member": mint_token(data, user="member@localhost", role="member"),
            "viewer": mint_token(data, user="viewer@localhost", role="viewer"),
            "other_owner": mint_token(data, org="other", user="owner@other", role="owner"),
            "other_viewer": mint_token(data, org="other", user="viewer@other", role="viewer"),
            "forged": "tpt_" + secrets.token_urlsafe(32),
            "expired": expired_user_token(data),
            "revoked": created["token"],
        }
        main, elsewhere, stopped = dispatch(client, owner), dispatch(client, owner), dispatch(client, owner)
        stop = client.post(f"/v1/environments/{stopped.environment_id}/work/{stopped.work['id']}/stop",
                           json={"force": True}, headers=bearer(owner))
        assert stop.status_code == 200, stop.text
        header = jwt.get_unverified_header(main.worker_token)
        claims = jwt.decode(main.worker_token, options={"verify_signature": False})
        forged = jwt.encode(claims, "not-the-server-key-" * 3, algorithm="HS256", headers={"kid": header["kid"]})
        yield World(server, client, tokens, main, elsewhere, stopped, forged,
                    expired_worker_token(data, main.worker_token))


def _credential(world: World, route: str, caller: str) -> tuple[str | None, Dispatched]:
    """The Authorization token this caller sends on this route, and the session it targets."""
    if caller == "none":
        return None, world.main
    if caller == "worker":
        return world.main.worker_token, world.main
    if caller == "worker_elsewhere":
        return world.elsewhere.worker_token, world.main
    if route in WORKER_ROUTES and caller in ("forged", "expired", "revoked"):
        return {"forged": (world.forged_worker, world.main), "expired": (world.expired_worker, world.main),
                "revoked": (world.stopped.worker_token, world.stopped)}[caller]
    return world.tokens[caller], world.main


ASSISTANT = {"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]}}
PROMPT = {"type": "user", "message": {"role": "user", "content": "hello"}}


def _http(method: str, path: Callable[[World, Dispatched], str], body: Any = None) -> Any:
    def send(world: World, token: str | None, target: Dispatched) -> str:
        headers = bearer(token) if token else {}
        resp = world.client.request(method, path(world, target), json=body, headers=headers)
        return str(resp.status_code)
    return send


def _fresh_session(world: World) -> dict[str, Any]:
    return create_session(world.client, world.tokens["owner"])


def _archive(world: World, token: str | None, target: Dispatched) -> str:
    sid = _fresh_session(world)["id"]
    resp = world.client.post(f"/v1/sessions/{sid}/archive", json={}, headers=bearer(token) if token else {})
    return str(resp.status_code)


def _code_bridge(world: World, token: str | None, target: Dispatched) -> str:
    body = _fresh_session(world)["id"].split("_", 1)[1]
    resp = world.client.post(f"/v1/code/sessions/cse_{body}/bridge", json={}, headers=bearer(token) if token else {})
    return str(resp.status_code)


def _socket(path: Callable[[Dispatched], str], hello: bool) -> Any:
    def send(world: World, token: str | None, target: Dispatched) -> str:
        headers = bearer(token) if token else {}
        with connect(world.server.ws_url + path(target), additional_headers=headers, open_timeout=10) as ws:
            try:
                if hello:  # the subscribe socket speaks when spoken to
                    ws.send('{"type":"keep_alive"}')
                ws.recv(timeout=10)
                return "open"
            except ConnectionClosed as exc:
                return str(exc.rcvd.code if exc.rcvd is not None else None)
    return send


def _stream(world: World, token: str | None, target: Dispatched) -> str:
    url = f"/v1/code/sessions/{target.cse_id}/worker/events/stream"
    with world.client.stream("GET", url, headers=bearer(token) if token else {}) as resp:
        return str(resp.status_code)


def _worker(suffix: str, method: str = "POST", body: Any = None) -> Any:
    return _http(method, lambda w, t: f"/v1/code/sessions/{t.cse_id}/worker{suffix}", body)


SENDERS: dict[str, Any] = {
    "me": _http("GET", lambda w, t: "/v1/me"),
    "sessions.list": _http("GET", lambda w, t: "/v1/sessions"),
    "session.get": _http("GET", lambda w, t: f"/v1/sessions/{t.session_id}"),
    "session.events": _http("GET", lambda w, t: f"/v1/sessions/{t.session_id}/events"),
    "session.permissions": _http("GET", lambda w, t: f"/v1/sessions/{t.session_id}/permissions"),
    "session.patch": _http("PATCH", lambda w, t: f"/v1/sessions/{t.session_id}", {"title": "renamed"}),
    "session.prompt": _http("POST", lambda w, t: f"/v1/sessions/{t.session_id}/events", {"events": [PROMPT]}),
    "session.archive": _archive,
    "code.bridge": _code_bridge,
    "environments.list": _http("GET", lambda w, t: "/v1/environments"),
    "environment.register": _http("POST", lambda w, t: "/v1/environments/bridge",
                                  {"machine_name": "m", "directory": "/d", "max_sessions": 1}),
    "tokens.list": _http("GET", lambda w, t: "/v1/tokens"),
    "audit": _http("GET", lambda w, t: "/v1/audit"),
    "subscribe": _socket(lambda t: f"/v1/sessions/ws/{t.session_id}/subscribe", hello=True),
    "ingress.post": _http("POST", lambda w, t: f"/v1/session_ingress/session/{t.cse_id}/events",
                          {"events": [ASSISTANT]}),
    "ingress.ws": _socket(lambda t: f"/v1/session_ingress/ws/{t.cse_id}", hello=False),
    "worker.events": _worker("/events", body={"events": [{"payload": ASSISTANT}]}),
    "worker.heartbeat": _worker("/heartbeat", body={}),
    "worker.get": _worker("", method="GET"),
    "worker.stream": _stream,
    "work.heartbeat": _http("POST", lambda w, t: f"/v1/environments/{t.environment_id}/work/{t.work['id']}/heartbeat",
                            {}),
}


def test_every_route_family_is_in_the_table() -> None:
    assert set(SENDERS) == set(EXPECTED)


@pytest.mark.parametrize(("route", "caller"), CASES, ids=[f"{r}-{c}" for r, c in CASES])
def test_authorization(world: World, route: str, caller: str) -> None:
    token, target = _credential(world, route, caller)
    assert SENDERS[route](world, token, target) == EXPECTED[route][caller]
