"""The auth matrix (docs/protocol.md §1, §3): credentials, kinds, orgs, roles, policy, audit.

Every test talks to a real `tether server` process over HTTP / WebSocket.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from tests.support.api import (
    admin_cli,
    assert_error,
    bearer,
    create_session,
    device_login,
    dispatch,
    mint_token,
    register_environment,
    web_login,
    ws_close_code,
)
from tests.support.server import ServerProcess, wait_until
from websockets.sync.client import connect

USER_MESSAGE = {"type": "user", "parent_tool_use_id": None, "message": {"role": "user", "content": "hello"}}


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def owner_token(server: ServerProcess) -> str:
    """Setup tokens are minted with `tether admin token create` in-process (tests/cli runs it for real)."""
    return mint_token(server.data_dir)


@pytest.fixture(scope="module")
def viewer_token(server: ServerProcess) -> str:
    return mint_token(server.data_dir, user="viewer@localhost", role="viewer")


@pytest.fixture(scope="module")
def member_token(server: ServerProcess) -> str:
    return mint_token(server.data_dir, user="member@localhost", role="member")


@pytest.fixture(scope="module")
def other_token(server: ServerProcess) -> str:
    """The owner of a second organisation."""
    return mint_token(server.data_dir, org="other", user="owner@other", role="owner")


def prompt(uuid: str | None = None) -> dict[str, Any]:
    event = dict(USER_MESSAGE)
    if uuid:
        event["uuid"] = uuid
    return {"events": [event]}


# ---- no / malformed / unknown credentials ---------------------------------------------------

USER_ROUTES = [
    ("GET", "/v1/me"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/sessions"),
    ("GET", "/v1/environments"),
    ("POST", "/v1/environments/bridge"),
    ("GET", "/v1/bridge/config"),
    ("GET", "/v1/tokens"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/audit"),
    ("PUT", "/v1/org/policy"),
]


@pytest.mark.parametrize(("method", "path"), USER_ROUTES)
def test_no_credential_is_401(client: httpx.Client, method: str, path: str) -> None:
    resp = client.request(method, path, json={} if method in ("POST", "PUT") else None)
    assert_error(resp, 401, "authentication_error")


def test_no_credential_on_environment_and_session_routes(client: httpx.Client, owner_token: str) -> None:
    d = dispatch(client, owner_token)
    env, work = d.environment_id, d.work["id"]
    for method, path in [
        ("GET", f"/v1/environments/{env}/work/poll"),
        ("POST", f"/v1/environments/{env}/work/{work}/ack"),
        ("POST", f"/v1/environments/{env}/work/{work}/heartbeat"),
        ("POST", f"/v1/environments/{env}/work/{work}/stop"),
        ("POST", f"/v1/environments/{env}/bridge/reconnect"),
        ("DELETE", f"/v1/environments/bridge/{env}"),
        ("GET", f"/v1/sessions/{d.session_id}"),
        ("PATCH", f"/v1/sessions/{d.session_id}"),
        ("POST", f"/v1/sessions/{d.session_id}/events"),
        ("GET", f"/v1/sessions/{d.session_id}/events"),
        ("POST", f"/v1/sessions/{d.session_id}/archive"),
        ("GET", f"/v1/sessions/{d.session_id}/permissions"),
        ("POST", f"/v1/session_ingress/session/{d.cse_id}/events"),
        ("POST", f"/v2/session_ingress/session/{d.cse_id}/events"),
    ]:
        resp = client.request(method, path, json={} if method in ("POST", "PATCH") else None)
        assert_error(resp, 401, "authentication_error")


@pytest.mark.parametrize("header", [
    "Basic b3duZXI6cGFzc3dvcmQ=",
    "Bearer",
    "Bearer tpt_a tpt_b",
    "Token tpt_abc",
    "tpt_abc",
    "Bearer\ttpt_abc",
])
def test_malformed_authorization_header(client: httpx.Client, header: str) -> None:
    resp = client.get("/v1/me", headers={"authorization": header})
    assert_error(resp, 401, "authentication_error")


@pytest.mark.parametrize("token", [
    "tpt_" + "A" * 43,  # right prefix, never issued
    "tat_forged",
    "trt_" + "B" * 43,  # a refresh token is not a bearer credential either
    "tws_" + "C" * 43,
    "no-prefix-at-all",
    "x" * 5000,
    "a.b.c",
])
def test_unknown_or_forged_token(client: httpx.Client, token: str) -> None:
    assert_error(client.get("/v1/me", headers=bearer(token)), 401, "authentication_error")
    assert_error(client.get("/v1/sessions", headers=bearer(token)), 401, "authentication_error")


def test_forged_worker_jwt(client: httpx.Client, owner_token: str) -> None:
    d = dispatch(client, owner_token)
    header = jwt.get_unverified_header(d.worker_token)
    claims = jwt.decode(d.worker_token, options={"verify_signature": False})
    forged = [
        jwt.encode(claims, "not-the-server-key-" * 3, algorithm="HS256", headers={"kid": header["kid"]}),
        jwt.encode(claims, "not-the-server-key-" * 3, algorithm="HS256", headers={"kid": "kunknown"}),
        jwt.encode({**claims, "role": "admin"}, "x" * 64, algorithm="HS256", headers={"kid": header["kid"]}),
        jwt.encode(claims, None, algorithm="none", headers={"kid": header["kid"]}),  # type: ignore[arg-type]
        d.worker_token[:-4] + "AAAA",
    ]
    url = f"/v1/session_ingress/session/{d.cse_id}/events"
    for token in forged:
        resp = client.post(url, json={"events": [{"type": "assistant", "message": {}}]}, headers=bearer(token))
        assert_error(resp, 401, "authentication_error")
        resp = client.post(f"/v1/environments/{d.environment_id}/work/{d.work['id']}/heartbeat", json={},
                           headers=bearer(token))
        assert_error(resp, 401, "authentication_error")
    # the genuine token works on the same routes
    ok = client.post(f"/v1/environments/{d.environment_id}/work/{d.work['id']}/heartbeat", json={},
                     headers=bearer(d.worker_token))
    assert ok.status_code == 200, ok.text


def test_revoked_personal_token(client: httpx.Client, owner_token: str) -> None:
    created = client.post("/v1/tokens", json={"name": "ci"}, headers=bearer(owner_token))
    assert created.status_code == 200, created.text
    token, token_id = created.json()["token"], created.json()["id"]
    assert client.get("/v1/me", headers=bearer(token)).status_code == 200
    listed = client.get("/v1/tokens", headers=bearer(owner_token)).json()["data"]
    assert token_id in [t["id"] for t in listed] and all("token" not in t for t in listed)

    assert client.delete(f"/v1/tokens/{token_id}", headers=bearer(owner_token)).status_code == 200
    assert_error(client.get("/v1/me", headers=bearer(token)), 401, "authentication_error")
    assert_error(client.get("/v1/sessions", headers=bearer(token)), 401, "authentication_error")
    assert token_id not in [t["id"] for t in client.get("/v1/tokens", headers=bearer(owner_token)).json()["data"]]
    # revoking again, or somebody else's token, is a 404
    assert_error(client.delete(f"/v1/tokens/{token_id}", headers=bearer(token)), 401, "authentication_error")


def test_cannot_revoke_another_users_token(client: httpx.Client, owner_token: str, member_token: str,
                                           other_token: str) -> None:
    created = client.post("/v1/tokens", json={"name": "mine"}, headers=bearer(owner_token)).json()
    for intruder in (member_token, other_token):
        assert_error(client.delete(f"/v1/tokens/{created['id']}", headers=bearer(intruder)), 404, "not_found_error")
    assert client.get("/v1/me", headers=bearer(created["token"])).status_code == 200


def test_expired_credentials(tmp_path: pathlib.Path) -> None:
    """Access tokens (1 s here) and worker tokens (1 s here) stop working when they expire."""
    with ServerProcess(tmp_path / "short", limits={"rate_per_second": 0}, access_token_ttl_s=1,
                       worker_token_ttl_s=1) as srv, \
            httpx.Client(base_url=srv.url, timeout=15) as client, \
            httpx.Client(base_url=srv.url, timeout=15) as web:
        assert srv.login_link
        web_login(web, srv.login_link)
        pair = device_login(client, web)
        assert pair["expires_in"] == 1
        access = pair["access_token"]
        issued = time.monotonic()
        first = client.get("/v1/me", headers=bearer(access))
        if time.monotonic() - issued < 0.5:  # surely still inside its 1 s lifetime
            assert first.status_code == 200, first.text
            assert first.json()["credential"] == "access"
        expired = wait_until(lambda: (r := client.get("/v1/me", headers=bearer(access))).status_code == 401 and r,
                             timeout=10, interval=0.1, message="the access token to expire")
        error = assert_error(expired, 401, "authentication_error")
        assert "expired" in error["message"]
        # the refresh token still works and yields a fresh access token
        refreshed = client.post("/oauth/token", data={"grant_type": "refresh_token",
                                                      "refresh_token": pair["refresh_token"]})
        assert refreshed.status_code == 200, refreshed.text

        # worker tokens: heartbeat and the ingress socket refuse an expired one
        owner = mint_token(srv.data_dir)
        d = dispatch(client, owner)
        hb = f"/v1/environments/{d.environment_id}/work/{d.work['id']}/heartbeat"
        expired = wait_until(lambda: (r := client.post(hb, json={}, headers=bearer(d.worker_token))).status_code
                             == 401 and r, timeout=10, interval=0.1, message="the worker token to expire")
        assert "expired" in assert_error(expired, 401, "authentication_error")["message"]
        with connect(f"{srv.ws_url}/v1/session_ingress/ws/{d.cse_id}", additional_headers=bearer(d.worker_token),
                     open_timeout=10) as ws:
            assert ws_close_code(ws) == 4003


# ---- wrong credential kind ---------------------------------------------------------------------

def test_wrong_credential_kind(client: httpx.Client, owner_token: str) -> None:
    d = dispatch(client, owner_token)
    # environment secret: poll only
    for path in ("/v1/me", "/v1/sessions", f"/v1/sessions/{d.session_id}"):
        assert_error(client.get(path, headers=bearer(d.environment_secret)), 401, "authentication_error")
    assert_error(client.post("/v1/environments/bridge", json={}, headers=bearer(d.environment_secret)),
                 401, "authentication_error")
    # worker JWT: not a user credential
    for path in ("/v1/me", "/v1/sessions", f"/v1/sessions/{d.session_id}", "/v1/tokens"):
        assert_error(client.get(path, headers=bearer(d.worker_token)), 401, "authentication_error")
    assert_error(client.post("/v1/sessions", json={}, headers=bearer(d.worker_token)), 401, "authentication_error")
    # personal token, worker token on the poll route
    poll = f"/v1/environments/{d.environment_id}/work/poll"
    for token in (owner_token, d.worker_token):
        assert_error(client.get(poll, headers=bearer(token)), 401, "authentication_error")
    # user token / environment secret where a worker token is needed
    hb = f"/v1/environments/{d.environment_id}/work/{d.work['id']}/heartbeat"
    for token in (owner_token, d.environment_secret):
        assert_error(client.post(hb, json={}, headers=bearer(token)), 401, "authentication_error")
    # an environment secret of another environment does not poll this one
    env2, secret2 = register_environment(client, owner_token)
    assert_error(client.get(poll, headers=bearer(secret2)), 404, "not_found_error")
    assert env2 != d.environment_id


def test_worker_token_is_bound_to_its_session(client: httpx.Client, owner_token: str) -> None:
    a = dispatch(client, owner_token)
    b = dispatch(client, owner_token)
    resp = client.post(f"/v1/session_ingress/session/{b.cse_id}/events",
                       json={"events": [{"type": "assistant", "message": {}}]}, headers=bearer(a.worker_token))
    assert_error(resp, 401, "authentication_error")
    resp = client.post(f"/v1/sessions/{b.session_id}/events",
                       json={"events": [{"type": "control_response",
                                         "response": {"subtype": "error", "request_id": "r1", "error": "x"}}]},
                       headers=bearer(a.worker_token))
    assert_error(resp, 401, "authentication_error")


# ---- organisations: another org's resources are 404 ------------------------------------------

def test_other_org_sees_404(client: httpx.Client, owner_token: str, other_token: str) -> None:
    d = dispatch(client, owner_token)
    sid, env, work = d.session_id, d.environment_id, d.work["id"]
    h = bearer(other_token)
    for sess in (sid, d.cse_id):
        assert_error(client.get(f"/v1/sessions/{sess}", headers=h), 404, "not_found_error")
        assert_error(client.patch(f"/v1/sessions/{sess}", json={"title": "x"}, headers=h), 404, "not_found_error")
        assert_error(client.get(f"/v1/sessions/{sess}/events", headers=h), 404, "not_found_error")
        assert_error(client.post(f"/v1/sessions/{sess}/events", json=prompt(), headers=h), 404, "not_found_error")
        assert_error(client.get(f"/v1/sessions/{sess}/permissions", headers=h), 404, "not_found_error")
        assert_error(client.post(f"/v1/sessions/{sess}/archive", json={}, headers=h), 404, "not_found_error")
        assert_error(client.post(f"/v1/session_ingress/session/{sess}/events",
                                 json={"events": [{"type": "assistant"}]}, headers=h), 404, "not_found_error")
    assert_error(client.post(f"/v1/environments/{env}/work/{work}/stop", json={}, headers=h), 404, "not_found_error")
    assert_error(client.post(f"/v1/environments/{env}/bridge/reconnect", json={"session_id": sid}, headers=h),
                 404, "not_found_error")
    assert_error(client.delete(f"/v1/environments/bridge/{env}", headers=h), 404, "not_found_error")
    assert_error(client.post("/v1/sessions", json={"environment_id": env}, headers=h), 404, "not_found_error")
    # the other org's lists do not show them
    assert sid not in [s["id"] for s in client.get("/v1/sessions", headers=h).json()["data"]]
    assert env not in [e["id"] for e in client.get("/v1/environments", headers=h).json()["data"]]
    # re-registering with a foreign environment_id yields a fresh id, never the foreign one
    new_env, _ = register_environment(client, other_token, environment_id=env)
    assert new_env != env
    # nothing was changed for the owner
    mine = client.get(f"/v1/sessions/{sid}", headers=bearer(owner_token))
    assert mine.status_code == 200 and mine.json()["session_status"] != "archived"
    assert client.post(f"/v1/environments/{env}/work/{work}/heartbeat", json={},
                       headers=bearer(d.worker_token)).status_code == 200


def test_other_org_subscribe_and_ingress_socket_close_4001(server: ServerProcess, client: httpx.Client,
                                                            owner_token: str, other_token: str) -> None:
    d = dispatch(client, owner_token)
    for path in (f"/v1/sessions/ws/{d.session_id}/subscribe", f"/v1/session_ingress/ws/{d.cse_id}"):
        with connect(server.ws_url + path, additional_headers=bearer(other_token), open_timeout=10) as ws:
            assert ws_close_code(ws) == 4001


# ---- roles ----------------------------------------------------------------------------------

def test_viewer_reads_but_never_writes(client: httpx.Client, owner_token: str, viewer_token: str) -> None:
    d = dispatch(client, owner_token)
    sid = d.session_id
    assert client.post(f"/v1/sessions/{sid}/events", json=prompt(), headers=bearer(owner_token)).status_code == 200
    v = bearer(viewer_token)
    me = client.get("/v1/me", headers=v).json()
    assert me["role"] == "viewer"
    assert client.get(f"/v1/sessions/{sid}", headers=v).status_code == 200
    assert sid in [s["id"] for s in client.get("/v1/sessions", headers=v).json()["data"]]
    events = client.get(f"/v1/sessions/{sid}/events", headers=v)
    assert events.status_code == 200 and events.json()["data"]
    assert client.get(f"/v1/sessions/{sid}/permissions", headers=v).status_code == 200
    assert client.get("/v1/environments", headers=v).status_code == 200

    assert_error(client.post(f"/v1/sessions/{sid}/events", json=prompt(), headers=v), 403, "permission_error")
    assert_error(client.post(f"/v1/sessions/{sid}/archive", json={}, headers=v), 403, "permission_error")
    assert_error(client.patch(f"/v1/sessions/{sid}", json={"title": "t"}, headers=v), 403, "permission_error")
    assert_error(client.post("/v1/sessions", json={}, headers=v), 403, "permission_error")
    assert_error(client.post("/v1/environments/bridge", json={"machine_name": "m"}, headers=v),
                 403, "permission_error")
    assert_error(client.post(f"/v1/environments/{d.environment_id}/bridge/reconnect", json={"session_id": sid},
                             headers=v), 403, "permission_error")
    assert_error(client.post(f"/v1/environments/{d.environment_id}/work/{d.work['id']}/stop", json={},
                             headers=v), 403, "permission_error")
    assert_error(client.delete(f"/v1/environments/bridge/{d.environment_id}", headers=v), 403, "permission_error")
    assert_error(client.post("/v1/files", files={"file": ("a.txt", b"hi")}, headers=v), 403, "permission_error")
    assert_error(client.put("/v1/org/policy", json={"allow_remote_control": False}, headers=v),
                 403, "permission_error")
    # the viewer may not act as a v1 worker with its user credential either
    assert_error(client.post(f"/v1/session_ingress/session/{sid}/events",
                             json={"events": [{"type": "assistant"}]}, headers=v), 403, "permission_error")
    # nothing changed
    after = client.get(f"/v1/sessions/{sid}", headers=v).json()
    assert after["session_status"] != "archived" and after["title"] == "test"
    assert len(client.get(f"/v1/sessions/{sid}/events", headers=v).json()["data"]) == len(events.json()["data"])


def test_viewer_subscribes_but_cannot_send_control(server: ServerProcess, client: httpx.Client, owner_token: str,
                                                   viewer_token: str) -> None:
    d = dispatch(client, owner_token)
    posted = client.post(f"/v1/sessions/{d.session_id}/events", json=prompt("11111111-2222-4333-8444-555555555555"),
                         headers=bearer(owner_token))
    assert posted.status_code == 200, posted.text
    url = f"{server.ws_url}/v1/sessions/ws/{d.session_id}/subscribe?from_sequence_num=0"
    with connect(url, additional_headers=bearer(viewer_token), open_timeout=10) as ws:
        first = json.loads(ws.recv(timeout=10))
        assert first["type"] == "user" and first["uuid"] == "11111111-2222-4333-8444-555555555555", first
        for frame in (
            {"type": "control_request", "request_id": "viewer-1", "request": {"subtype": "interrupt"}},
            {"type": "control_response",
             "response": {"subtype": "success", "request_id": "viewer-2", "response": {"behavior": "allow"}}},
        ):
            ws.send(json.dumps(frame))
            while True:  # skip fan-out frames (session/delivery updates) until the answer
                reply = json.loads(ws.recv(timeout=10))
                if reply["type"] == "error":
                    break
            assert reply["error"]["type"] == "permission_error", reply
            assert reply["request_id"] in ("viewer-1", "viewer-2")
        # the socket stays usable
        ws.send(json.dumps({"type": "keep_alive"}))
        while json.loads(ws.recv(timeout=10))["type"] != "keep_alive":
            pass
    # no interrupt was logged
    data = client.get(f"/v1/sessions/{d.session_id}/events", headers=bearer(owner_token)).json()["data"]
    assert all(e.get("type") != "control_request" for e in data), data


def test_member_may_write_but_not_administer(client: httpx.Client, member_token: str) -> None:
    m = bearer(member_token)
    session = create_session(client, member_token)
    assert client.post(f"/v1/sessions/{session['id']}/events", json=prompt(), headers=m).status_code == 200
    assert_error(client.get("/v1/audit", headers=m), 403, "permission_error")
    assert_error(client.put("/v1/org/policy", json={"allow_remote_control": False}, headers=m),
                 403, "permission_error")


# ---- organisation policy ------------------------------------------------------------------

def test_policy_off_denies_remote_control(server: ServerProcess, client: httpx.Client) -> None:
    owner = mint_token(server.data_dir, org="strict", user="owner@strict", role="owner")
    h = bearer(owner)
    env, _ = register_environment(client, owner)
    session = create_session(client, owner, env)
    assert client.get("/v1/me", headers=h).json()["policy"] == {"allow_remote_control": True}

    assert "off" in admin_cli(server.data_dir, "policy", "--org", "strict", "--deny-remote-control").stdout
    assert client.get("/v1/me", headers=h).json()["policy"] == {"allow_remote_control": False}
    assert_error(client.post("/v1/environments/bridge", json={"machine_name": "m"}, headers=h), 403, "policy_denied")
    assert_error(client.post("/v1/sessions", json={"title": "t"}, headers=h), 403, "policy_denied")
    assert_error(client.post(f"/v1/environments/{env}/bridge/reconnect", json={"session_id": session["id"]},
                             headers=h), 403, "policy_denied")
    # reading is still allowed
    assert client.get(f"/v1/sessions/{session['id']}", headers=h).status_code == 200

    # the owner turns it back on over the API
    on = client.put("/v1/org/policy", json={"allow_remote_control": True}, headers=h)
    assert on.status_code == 200 and on.json() == {"allow_remote_control": True}
    assert client.post("/v1/sessions", json={"title": "t"}, headers=h).status_code == 200
    # … and off again over the API
    assert client.put("/v1/org/policy", json={"allow_remote_control": False}, headers=h).status_code == 200
    assert_error(client.post("/v1/environments/bridge", json={}, headers=h), 403, "policy_denied")
    assert "off" in admin_cli(server.data_dir, "policy", "--org", "strict").stdout
    assert_error(client.put("/v1/org/policy", json={"allow_remote_control": "yes"}, headers=h),
                 400, "invalid_request_error")


def test_policy_is_per_organisation(server: ServerProcess, client: httpx.Client, owner_token: str) -> None:
    owner = mint_token(server.data_dir, org="strict2", user="owner@strict2", role="owner")
    assert client.put("/v1/org/policy", json={"allow_remote_control": False}, headers=bearer(owner)).status_code == 200
    # the default org is untouched
    assert client.post("/v1/sessions", json={"title": "t"}, headers=bearer(owner_token)).status_code == 200
    assert client.get("/v1/me", headers=bearer(owner_token)).json()["policy"]["allow_remote_control"] is True


# ---- audit log ------------------------------------------------------------------------------

def test_audit_log_owner_only_and_records_actions(server: ServerProcess, client: httpx.Client,
                                                  other_token: str, viewer_token: str, member_token: str) -> None:
    owner = mint_token(server.data_dir, org="audited", user="owner@audited", role="owner")
    h = bearer(owner)
    token = client.post("/v1/tokens", json={"name": "audit-me"}, headers=h).json()
    session = create_session(client, owner)
    sid = session["id"]
    assert client.post(f"/v1/sessions/{sid}/events", json=prompt(), headers=h).status_code == 200
    assert client.post(f"/v1/sessions/{sid}/archive", json={}, headers=h).status_code == 200
    assert_error(client.post(f"/v1/sessions/{sid}/archive", json={}, headers=h), 409, "already_archived")

    resp = client.get("/v1/audit", headers=h)
    assert resp.status_code == 200, resp.text
    entries = resp.json()["data"]
    by_action: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by_action.setdefault(e["action"], []).append(e)
    assert token["id"] in [e["target"] for e in by_action["token.create"]]
    for action in ("session.create", "session.prompt", "session.archive"):
        assert sid in [e["target"] for e in by_action.get(action, [])], (action, entries)
    assert len(by_action["session.archive"]) == 1  # the refused second archive is not recorded
    assert all({"id", "actor", "action", "target", "detail", "at"} <= set(e) for e in entries)
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True), "newest first"

    # paging
    page = client.get("/v1/audit", params={"limit": 2}, headers=h).json()
    assert len(page["data"]) == 2 and page["has_more"] is True and page["next_before"] == page["data"][-1]["id"]
    rest = client.get("/v1/audit", params={"limit": 1000, "before": page["next_before"]}, headers=h).json()
    assert [e["id"] for e in page["data"] + rest["data"]] == ids
    assert_error(client.get("/v1/audit", params={"limit": "lots"}, headers=h), 400, "invalid_request_error")

    # owners only; other orgs do not see it
    for token_value in (viewer_token, member_token):
        assert_error(client.get("/v1/audit", headers=bearer(token_value)), 403, "permission_error")
    others = client.get("/v1/audit", params={"limit": 1000}, headers=bearer(other_token)).json()["data"]
    assert sid not in [e["target"] for e in others]
