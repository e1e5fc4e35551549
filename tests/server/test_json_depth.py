"""Deeply nested JSON (issue #11 item 2; docs/protocol.md §4.8): refused at every edge with the
error shape, and rows stored before the limit existed are still served.

orjson reads 1,024 levels but writes only 254, so a value nested ~250 deep used to be accepted and
then break every later read of it (500 for the org's session list, the event page, the SSE stream
dying on each reconnect). Now every body and frame is at most 64 levels deep, and reads clamp any
older, deeper row instead of failing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.support import database
from tests.support.api import assert_error, bearer, create_session, dispatch, ws_close_code
from tests.support.server import ServerProcess, wait_until
from websockets.sync.client import connect

from tether.protocol.json_depth import MAX_DEPTH


def nested(depth: int, leaf: Any = 1) -> Any:
    """A list nested ``depth`` levels deep."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_text(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def _code_session(client: httpx.Client, token: str) -> tuple[str, str]:
    r = client.post("/v1/code/sessions", json={"title": "deep", "bridge": {}}, headers=bearer(token))
    assert r.status_code == 200, r.text
    sid = r.json()["session"]["id"]
    r = client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=bearer(token))
    assert r.status_code == 200, r.text
    return sid, r.json()["worker_jwt"]


# ---- refused at the edge ----------------------------------------------------------------------

@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 300, 2000])
def test_deep_bodies_are_400_on_every_kind_of_write(client: httpx.Client, owner_token: str, depth: int) -> None:
    d = dispatch(client, owner_token)
    cse, jwt = _code_session(client, owner_token)
    user = bearer(owner_token)
    prompt = {"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": nested(depth)}}
    cases: list[tuple[str, str, dict[str, str], Any]] = [
        ("POST", "/v1/sessions", user, {"title": "x", "session_context": {"deep": nested(depth)}}),
        ("POST", f"/v1/sessions/{d.session_id}/events", user, {"events": [prompt]}),
        ("PATCH", f"/v1/sessions/{d.session_id}", user, {"title": "t", "x": nested(depth)}),
        ("POST", "/v1/environments/bridge", user, {"machine_name": "m", "metadata": {"x": nested(depth)}}),
        ("POST", f"/v1/session_ingress/session/{d.session_id}/events", bearer(d.worker_token),
         {"events": [{"type": "assistant", "message": nested(depth)}]}),
        ("POST", f"/v1/code/sessions/{cse}/worker/events", bearer(jwt),
         {"events": [{"payload": {"type": "assistant", "x": nested(depth)}}]}),
        # the hot routes check a batch part by part: the events, and everything around them
        ("POST", f"/v1/session_ingress/session/{d.session_id}/events", bearer(d.worker_token),
         {"events": [{"type": "assistant"}], "junk": nested(depth)}),
        ("POST", f"/v1/code/sessions/{cse}/worker/events", bearer(jwt),
         {"events": [{"payload": {"type": "assistant"}, "agent_id": nested(depth)}]}),
        ("POST", f"/v1/code/sessions/{cse}/worker/events", bearer(jwt),
         {"events": [{"payload": {"type": "assistant"}}], "junk": {"x": nested(depth)}}),
        ("POST", f"/v1/code/sessions/{cse}/worker/internal-events", bearer(jwt),
         {"events": [{"payload": {"type": "transcript", "x": nested(depth)}}]}),
        ("PUT", f"/v1/code/sessions/{cse}/worker", bearer(jwt), {"external_metadata": {"x": nested(depth)}}),
        ("POST", "/web/render", user, {"items": [{"type": "markdown", "text": "x", "x": nested(depth)}]}),
        ("POST", "/oauth/token", {}, {"grant_type": nested(depth)}),
    ]
    for method, path, headers, body in cases:
        text = _raw_deep_body(body, depth)
        resp = client.request(method, path, content=text, headers={**headers, "content-type": "application/json"})
        error = assert_error(resp, 400, "invalid_request_error")
        assert "nest" in error["message"] or "JSON" in error["message"], (path, error)
    # nothing of it was stored
    page = client.get(f"/v1/sessions/{d.session_id}/events", headers=user).json()
    assert page["data"] == []


def _raw_deep_body(body: Any, depth: int) -> str:
    """json.dumps recurses once per level; a very deep body is spliced in as text instead."""
    marker = "__DEEP__"
    return json.dumps(_replace_deep(body, marker)).replace(f'"{marker}"', nested_text(depth))


def _replace_deep(value: Any, marker: str) -> Any:
    if isinstance(value, list) and value and isinstance(value[0], list):
        return marker
    if isinstance(value, dict):
        return {k: _replace_deep(v, marker) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_deep(v, marker) for v in value]
    return value


def test_the_limit_itself_is_accepted_and_read_back(client: httpx.Client, owner_token: str) -> None:
    user = bearer(owner_token)
    # the body's own object is one level, session_context another: 62 more fit
    body = {"title": "at the limit", "session_context": {"deep": nested(MAX_DEPTH - 3)}}
    created = client.post("/v1/sessions", json=body, headers=user)
    assert created.status_code == 200, created.text
    assert created.json()["session_context"] == body["session_context"]
    sessions = client.get("/v1/sessions", headers=user)
    assert sessions.status_code == 200, sessions.text
    too_deep = {"title": "over", "session_context": {"deep": nested(MAX_DEPTH - 1)}}
    assert_error(client.post("/v1/sessions", json=too_deep, headers=user), 400, "invalid_request_error")


def test_the_hot_routes_hold_the_whole_body_to_the_limit(client: httpx.Client, owner_token: str) -> None:
    """They check events one by one; the limit is still on the body: 64 levels in all."""
    d = dispatch(client, owner_token)
    path, worker = f"/v1/session_ingress/session/{d.session_id}/events", bearer(d.worker_token)
    # body (1) → events (2) → event (3) → "x" … : an event may nest 62 levels
    fits = {"events": [{"type": "assistant", "x": nested(MAX_DEPTH - 3)}]}
    assert client.post(path, json=fits, headers=worker).status_code == 200
    over = {"events": [{"type": "assistant", "x": nested(MAX_DEPTH - 2)}]}
    assert_error(client.post(path, json=over, headers=worker), 400, "invalid_request_error")


def test_brackets_inside_strings_do_not_count(client: httpx.Client, owner_token: str) -> None:
    session = create_session(client, owner_token)["id"]
    text = "[{" * 5000 + " a tool output full of brackets " + "}]" * 5000
    prompt = {"type": "user", "message": {"role": "user", "content": text}}
    resp = client.post(f"/v1/sessions/{session}/events", json={"events": [prompt]}, headers=bearer(owner_token))
    assert resp.status_code == 200, resp.text


def test_deep_worker_socket_frame_closes_1007(server: ServerProcess, client: httpx.Client,
                                              owner_token: str) -> None:
    d = dispatch(client, owner_token)
    url = f"{server.ws_url}/v1/session_ingress/ws/{d.session_id}"
    with connect(url, additional_headers=bearer(d.worker_token), open_timeout=10, max_size=None) as ws:
        ws.send('{"type": "assistant", "deep": ' + nested_text(300) + "}\n")
        assert ws_close_code(ws) == 1007
    # the session is fine: nothing was stored and the worker may reconnect
    page = client.get(f"/v1/sessions/{d.session_id}/events", headers=bearer(owner_token))
    assert page.status_code == 200 and page.json()["data"] == []
    with connect(url, additional_headers=bearer(d.worker_token), open_timeout=10, max_size=None) as ws:
        ws.send(json.dumps({"type": "assistant", "uuid": str(uuid.uuid4()), "message": {"content": []}}) + "\n")
        _wait_for_events(client, owner_token, d.session_id, 1)


def test_deep_subscribe_frame_gets_an_error_frame(server: ServerProcess, client: httpx.Client,
                                                  owner_token: str) -> None:
    session = create_session(client, owner_token)["id"]
    url = f"{server.ws_url}/v1/sessions/ws/{session}/subscribe"
    with connect(url, additional_headers=bearer(owner_token), open_timeout=10) as ws:
        ws.send('{"type": "control_request", "request": ' + nested_text(300) + "}")
        frame = json.loads(ws.recv(timeout=10))
        assert frame == {"type": "error", "error": {"type": "invalid_request_error",
                                                    "message": f"A frame nests deeper than {MAX_DEPTH} levels."}}
        ws.send('{"type": "keep_alive"}')
        assert json.loads(ws.recv(timeout=10)) == {"type": "keep_alive"}


def _wait_for_events(client: httpx.Client, token: str, session: str, count: int) -> list[dict[str, Any]]:
    def page() -> list[dict[str, Any]] | None:
        data = client.get(f"/v1/sessions/{session}/events", headers=bearer(token)).json()["data"]
        return data if len(data) >= count else None

    found: list[dict[str, Any]] = wait_until(page, 15, 0.05, f"{count} events")
    return found


# ---- rows stored before the limit are served ----------------------------------------------------

def _poison(server: ServerProcess, sql: str, *params: Any) -> None:
    """Write a row as an older server could have stored it (straight into its database)."""
    names = iter(range(len(params)))
    changed, _ = database.execute(server.data_dir, re.sub(r"\?", lambda _m: f":p{next(names)}", sql),
                                  {f"p{i}": value for i, value in enumerate(params)})
    assert changed == 1, sql


def test_poisoned_rows_are_served_not_500(server: ServerProcess, client: httpx.Client, owner_token: str) -> None:
    user = bearer(owner_token)
    cse, jwt = _code_session(client, owner_token)
    body = cse.removeprefix("cse_")
    worker = f"/v1/code/sessions/{cse}/worker"
    # a prompt (inbound, so the SSE stream carries it), a permission request, an internal event
    prompt_uuid = str(uuid.uuid4())
    r = client.post(f"/v1/sessions/{cse}/events", headers=user,
                    json={"events": [{"type": "user", "uuid": prompt_uuid,
                                      "message": {"role": "user", "content": "hi"}}]})
    assert r.status_code == 200, r.text
    ask = {"type": "control_request", "request_id": "req-deep",
           "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"}}}
    assert client.post(f"{worker}/events", headers=bearer(jwt), json={"events": [{"payload": ask}]}).status_code == 200
    internal = {"events": [{"payload": {"type": "transcript", "uuid": str(uuid.uuid4())}}]}
    assert client.post(f"{worker}/internal-events", headers=bearer(jwt), json=internal).status_code == 200

    deep = nested_text(300)  # deeper than orjson can write: no clamp, no answer
    _poison(server, "UPDATE sessions SET session_context = ?, external_metadata = ? WHERE id = ?",
            '{"ctx": ' + nested_text(252) + "}", '{"meta": ' + deep + "}", body)
    _poison(server, "UPDATE events SET payload = ? WHERE session_id = ? AND uuid = ?",
            json.dumps({"type": "user", "uuid": prompt_uuid, "message": {"role": "user", "content": "__D__"}})
            .replace('"__D__"', deep), body, prompt_uuid)
    _poison(server, "UPDATE permission_requests SET input = ? WHERE request_id = 'req-deep'", deep)
    _poison(server, "UPDATE internal_events SET payload = ? WHERE session_id = ?",
            '{"type": "transcript", "x": ' + deep + "}", body)

    reads = [
        ("/v1/sessions", user), (f"/v1/sessions/{cse}", user), (f"/v1/sessions/{cse}/events", user),
        (f"/v1/sessions/{cse}/permissions", user), (f"/v1/code/sessions/{cse}/teleport-events", user),
        (worker, bearer(jwt)), (f"{worker}/internal-events", bearer(jwt)),
    ]
    for path, headers in reads:
        resp = client.get(path, headers=headers)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:300]}"
    event = client.get(f"/v1/sessions/{cse}/events", headers=user).json()["data"][0]
    assert event["uuid"] == prompt_uuid and "nested too deep" in json.dumps(event)
    _assert_sse_serves(server, cse, jwt, prompt_uuid)
    _assert_sse_serves(server, cse, jwt, prompt_uuid)  # and again, on a reconnect
    url = f"{server.ws_url}/v1/sessions/ws/{cse}/subscribe?from_sequence_num=0"
    with connect(url, additional_headers=user, open_timeout=10, max_size=None) as ws:
        frames = [json.loads(ws.recv(timeout=10)) for _ in range(2)]  # the replay: prompt, permission request
        assert frames[0]["uuid"] == prompt_uuid and frames[0]["sequence_num"] == 1, frames[0]
    # later writes to the session still work
    r = client.put(worker, headers=bearer(jwt), json={"external_metadata": {"fine": 1}})
    assert r.status_code == 200, r.text


def _assert_sse_serves(server: ServerProcess, cse: str, jwt: str, prompt_uuid: str) -> None:
    headers = {**bearer(jwt), "accept": "text/event-stream"}
    with httpx.Client(base_url=server.url, timeout=httpx.Timeout(10.0)) as fresh, \
            fresh.stream("GET", f"/v1/code/sessions/{cse}/worker/events/stream?from_sequence_num=0",
                         headers=headers) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: "):
                data = json.loads(line[6:])
                assert data["payload"]["uuid"] == prompt_uuid
                return
    raise AssertionError("the stream ended before the first client_event")
