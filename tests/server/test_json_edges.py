"""Property tests on every JSON edge of the server (issue #11 standing guard).

Arbitrary JSON — any nesting (past the 64-level limit too), sizes around the 1 MiB limit, every
type, any Unicode including lone surrogates, NaN and infinities — goes into each write route and
socket: REST bodies, the v1 ingress POST and worker socket frames, the v2 ``/worker/*`` bodies and
subscribe frames. The invariant: the write is refused with a 4xx in the one error shape (or the
documented close code / error frame on a socket), or it is accepted and every later read of it
succeeds — the session list, the session, its event page, the worker's SSE stream reconnecting,
the subscribe replay, the /code page. Example counts are modest (the suite runs on 2 cores); set
TETHER_FUZZ_EXAMPLES to explore more.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.api import assert_error, bearer, dispatch, web_login, ws_close_code
from tests.support.server import ServerProcess
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

_EXPLORE = int(os.environ.get("TETHER_FUZZ_EXAMPLES", "0"))
EDGE = settings(max_examples=_EXPLORE or 12, derandomize=not _EXPLORE, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# ---- values -----------------------------------------------------------------------------------

leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.text(st.characters(codec=None, categories=["Cs", "Co", "Cc", "So"]), max_size=6),  # lone surrogates too
)


def _nest(depth: int, leaf: Any, lists: bool) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if lists or i % 3 == 0 else {"k": value}
    return value


deep = st.builds(_nest, st.integers(1, 140), leaves, st.booleans())
wide = st.recursive(leaves, lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=6), kids,
                                                                                          max_size=5), max_leaves=40)
sized = st.sampled_from([10_000, 500_000, (1 << 20) - 300, (1 << 20) + 10]).map(lambda n: "s" * n)
values = st.one_of(wide, deep, sized)


def dumps(value: Any) -> str:
    # as a careless client would send it: NaN/Infinity and lone surrogates (escaped) included
    return json.dumps(value, allow_nan=True)


def is_finite_json(value: Any) -> bool:
    """False for NaN/Infinity, which are not JSON (the server must refuse them with 400)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(is_finite_json(v) for v in value.values())
    if isinstance(value, list):
        return all(is_finite_json(v) for v in value)
    return True


# ---- the world --------------------------------------------------------------------------------

@dataclass
class World:
    server: ServerProcess
    client: httpx.Client
    web: httpx.Client
    token: str
    v1_session: str
    v1_worker: str
    cse: str
    jwt: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("edges"), limits={"rate_per_second": 0}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def world(server: ServerProcess) -> Iterator[World]:
    token = server.token()
    with httpx.Client(base_url=server.url, timeout=30) as client, \
            httpx.Client(base_url=server.url, timeout=30) as web:
        assert server.login_link
        web_login(web, server.login_link)
        d = dispatch(client, token)
        cse = client.post("/v1/code/sessions", json={"bridge": {}}, headers=bearer(token)).json()["session"]["id"]
        jwt = client.post(f"/v1/code/sessions/{cse}/bridge", json={}, headers=bearer(token)).json()["worker_jwt"]
        yield World(server, client, web, token, d.session_id, d.worker_token, cse, jwt)
        log = server.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "unhandled error" not in log, log[-4000:]


def send(world: World, method: str, path: str, token: str, body: str) -> httpx.Response:
    resp = world.client.request(method, path, content=body.encode("utf-8", "surrogatepass"),
                                headers={**bearer(token), "content-type": "application/json"})
    assert resp.status_code < 500, f"{method} {path}: {resp.status_code} {resp.text[:300]}"
    if resp.status_code >= 400:
        assert_error(resp, resp.status_code)
    return resp


# ---- reads that must keep working after an accepted write --------------------------------------

def reads_succeed(world: World, session: str, event_uuid: str | None, *, inbound: bool = False) -> None:
    user = bearer(world.token)
    for path in ("/v1/sessions", f"/v1/sessions/{session}", f"/v1/sessions/{session}/permissions"):
        resp = world.client.get(path, headers=user)
        assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:300]}"
    assert world.web.get("/code").status_code == 200
    assert world.web.get(f"/code/{session}").status_code == 200
    page = world.client.get(f"/v1/sessions/{session}/events", headers=user)
    assert page.status_code == 200, page.text[:300]
    if event_uuid is None:
        return
    latest = page.json()["data"][-1]
    assert latest["uuid"] == event_uuid, latest
    seq = latest["sequence_num"]
    # the subscribe replay from just before it
    url = f"{world.server.ws_url}/v1/sessions/ws/{session}/subscribe?from_sequence_num={seq - 1}"
    with connect(url, additional_headers=user, open_timeout=10, max_size=None) as ws:
        assert json.loads(ws.recv(timeout=10))["uuid"] == event_uuid
    if inbound:  # the worker's SSE stream, reconnecting from just before it
        cse = session.replace("session_", "cse_")
        with httpx.Client(base_url=world.server.url, timeout=10) as fresh, fresh.stream(
                "GET", f"/v1/code/sessions/{cse}/worker/events/stream?from_sequence_num={seq - 1}",
                headers={**bearer(world.jwt), "accept": "text/event-stream"}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    assert json.loads(line[6:])["payload"]["uuid"] == event_uuid
                    break


# ---- REST bodies -------------------------------------------------------------------------------

@EDGE
@given(value=values)
def test_create_session(world: World, value: Any) -> None:
    prompt = {"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": "p"}, "x": value}
    body = dumps({"title": "edge", "session_context": {"v": value}, "tags": ["t"],
                  "events": [{"type": "event", "data": prompt}]})
    resp = send(world, "POST", "/v1/sessions", world.token, body)
    if resp.status_code == 200:
        reads_succeed(world, resp.json()["id"], prompt["uuid"])


@EDGE
@given(value=values)
def test_client_prompt(world: World, value: Any) -> None:
    prompt = {"type": "user", "uuid": str(uuid.uuid4()), "message": {"role": "user", "content": [
        {"type": "text", "text": "p", "extra": value}]}}
    resp = send(world, "POST", f"/v1/sessions/{world.cse}/events", world.token, dumps({"events": [prompt]}))
    if resp.status_code == 200:
        reads_succeed(world, world.cse.replace("cse_", "session_"), prompt["uuid"], inbound=True)


@EDGE
@given(value=values)
def test_environment_registration(world: World, value: Any) -> None:
    resp = send(world, "POST", "/v1/environments/bridge", world.token, dumps({"machine_name": "m", "metadata": {"v": value}}))
    if resp.status_code == 200:
        assert world.client.get("/v1/environments", headers=bearer(world.token)).status_code == 200


# ---- worker writes: v1 POST and socket, v2 /worker/* -------------------------------------------

@EDGE
@given(value=values)
def test_v1_ingress_post(world: World, value: Any) -> None:
    event = {"type": "assistant", "uuid": str(uuid.uuid4()), "message": value}
    resp = send(world, "POST", f"/v1/session_ingress/session/{world.v1_session}/events", world.v1_worker,
                dumps({"events": [event]}))
    if resp.status_code == 200:
        reads_succeed(world, world.v1_session, event["uuid"])


@EDGE
@given(value=values)
def test_v1_worker_socket_frame(world: World, value: Any) -> None:
    event = {"type": "assistant", "uuid": str(uuid.uuid4()), "message": value}
    marker = {"type": "assistant", "uuid": str(uuid.uuid4()), "message": {"content": []}}
    url = f"{world.server.ws_url}/v1/session_ingress/ws/{world.v1_session}"
    with connect(url, additional_headers=bearer(world.v1_worker), open_timeout=10, max_size=None) as ws:
        try:
            ws.send(dumps(event) + "\n")
            ws.send(dumps(marker) + "\n")
        except ConnectionClosed:
            pass  # closed while the frame was still being sent (1009)
        code = _closed_or_marker_stored(world, ws, marker["uuid"])
    if code is not None:
        assert code in (1007, 1009), code
        return
    reads_succeed(world, world.v1_session, marker["uuid"])
    uuids = [e["uuid"] for e in world.client.get(f"/v1/sessions/{world.v1_session}/events",
                                                    headers=bearer(world.token)).json()["data"]]
    assert event["uuid"] in uuids


def _closed_or_marker_stored(world: World, ws: Any, marker: str) -> int | None:
    """The close code if the server closed the socket, or None once ``marker`` is in the log."""
    from tests.support.server import wait_until

    def settled() -> tuple[str, int | None] | None:
        if ws.close_code is not None:
            return ("closed", ws.close_code)
        data = world.client.get(f"/v1/sessions/{world.v1_session}/events", params={"limit": 3},
                                headers=bearer(world.token)).json()["data"]
        return ("stored", None) if any(e["uuid"] == marker for e in data) else None

    kind, code = wait_until(settled, 20, 0.02, "the frame to be stored or refused")
    if kind == "closed":
        return ws_close_code(ws)
    return code


@EDGE
@given(value=values, ephemeral=st.booleans())
def test_v2_worker_events(world: World, value: Any, ephemeral: bool) -> None:
    event = {"type": "assistant", "uuid": str(uuid.uuid4()), "message": value}
    body = dumps({"events": [{"payload": event, "ephemeral": ephemeral}]})
    resp = send(world, "POST", f"/v1/code/sessions/{world.cse}/worker/events", world.jwt, body)
    if resp.status_code == 200:
        reads_succeed(world, world.cse.replace("cse_", "session_"), None if ephemeral else event["uuid"])


@EDGE
@given(value=values)
def test_v2_internal_events_and_metadata(world: World, value: Any) -> None:
    worker = f"/v1/code/sessions/{world.cse}/worker"
    body = dumps({"events": [{"payload": {"type": "transcript", "uuid": str(uuid.uuid4()), "x": value}}]})
    send(world, "POST", f"{worker}/internal-events", world.jwt, body)
    send(world, "PUT", worker, world.jwt, dumps({"external_metadata": {"v": value}}))
    for path, token in ((worker, world.jwt), (f"{worker}/internal-events", world.jwt),
                        (f"/v1/code/sessions/{world.cse}/teleport-events", world.token)):
        cursor: str | None = None
        while True:  # every page of it
            resp = world.client.get(path, params={"cursor": cursor} if cursor else {}, headers=bearer(token))
            assert resp.status_code == 200, f"{path}: {resp.status_code} {resp.text[:300]}"
            cursor = resp.json().get("next_cursor")
            if cursor is None:
                break
    reads_succeed(world, world.cse.replace("cse_", "session_"), None)


# ---- subscribe frames --------------------------------------------------------------------------

@EDGE
@given(value=values, kind=st.sampled_from(["control_request", "control_response", "keep_alive"]))
def test_subscribe_frame(world: World, value: Any, kind: str) -> None:
    session = world.cse.replace("cse_", "session_")
    request_id = str(uuid.uuid4())
    frame = {"type": kind, "uuid": str(uuid.uuid4()), "request_id": request_id,
             "request": {"subtype": "interrupt", "x": value}, "response": {"subtype": "success", "x": value}}
    url = f"{world.server.ws_url}/v1/sessions/ws/{session}/subscribe"
    with connect(url, additional_headers=bearer(world.token), open_timeout=10, max_size=None) as ws:
        try:
            ws.send(dumps(frame))
        except ConnectionClosed:
            pass
        reply = _reply(ws)
    if reply is None:  # closed: only for a frame over the size limit
        assert len(dumps(frame).encode("utf-8", "surrogatepass")) > (1 << 20), "closed for a small frame"
        return
    if reply["type"] == "error":
        assert set(reply) <= {"type", "error", "request_id"} and set(reply["error"]) == {"type", "message"}, reply
        return
    if kind == "control_request":
        assert reply["type"] == "control_response" and reply["response"]["request_id"] == request_id, reply
        assert is_finite_json(value)
        reads_succeed(world, session, frame["uuid"], inbound=True)


def _reply(ws: Any) -> dict[str, Any] | None:
    """The server's answer to our frame (fan-out frames skipped), or None if it closed the socket."""
    try:
        while True:
            reply = json.loads(ws.recv(timeout=15))
            if reply.get("type") in ("error", "control_response", "keep_alive"):
                return dict(reply)
    except ConnectionClosed:
        assert ws_close_code(ws) == 1009
        return None
