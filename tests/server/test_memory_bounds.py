"""Memory bounds of reads and stored fields (issue #11 item 6; docs/protocol.md §4.8).

Reads of the event log are paged by bytes as well as by count (a page of 1,000 events of 1 MiB
each used to be built whole), and every stored JSON field is at most 1 MiB like an event.
The server here runs with a small page budget so that a handful of events spans many pages; every
read must still return every event exactly once, in order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.support.api import assert_error, bearer, create_session, dispatch
from tests.support.server import ServerProcess
from websockets.sync.client import connect

PAGE_BYTES = 64 * 1024
EVENT_TEXT = 20_000  # three of these fill a page
MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("pages"),
                         limits={"rate_per_second": 0, "max_page_bytes": PAGE_BYTES}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    return server.token()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def prompts(count: int) -> list[dict[str, Any]]:
    return [{"type": "user", "uuid": str(uuid.uuid4()),
             "message": {"role": "user", "content": f"{i}:" + "p" * EVENT_TEXT}} for i in range(count)]


@pytest.fixture(scope="module")
def big_session(client: httpx.Client, token: str) -> tuple[str, list[str]]:
    """A session with 10 prompts of ~20 KB (inbound, so the worker streams carry them too)."""
    session = create_session(client, token)["id"]
    events = prompts(10)
    for event in events:
        resp = client.post(f"/v1/sessions/{session}/events", json={"events": [event]}, headers=bearer(token))
        assert resp.status_code == 200, resp.text
    return session, [e["uuid"] for e in events]


def test_event_pages_are_cut_by_bytes_and_page_through_everything(client: httpx.Client, token: str,
                                                                  big_session: tuple[str, list[str]]) -> None:
    session, uuids = big_session
    path = f"/v1/sessions/{session}/events"
    # backwards from the latest (the web client's history), 100 asked for each time
    seen: list[str] = []
    page = client.get(path, params={"limit": 100}, headers=bearer(token)).json()
    while True:
        assert 1 <= len(page["data"]) <= 3 and len(json.dumps(page["data"])) < PAGE_BYTES + EVENT_TEXT
        seen = [e["uuid"] for e in page["data"]] + seen
        if not page["has_more"]:
            break
        page = client.get(path, params={"limit": 100, "before_id": page["first_id"]}, headers=bearer(token)).json()
    assert seen == uuids
    # forwards from the first
    before_first = client.get(path, params={"before_id": page["first_id"]}, headers=bearer(token)).json()
    assert before_first["data"] == [] and before_first["has_more"] is False
    forward, after = [page["data"][0]["uuid"]], page["first_id"]
    while True:
        page = client.get(path, params={"limit": 100, "after_id": after}, headers=bearer(token)).json()
        forward += [e["uuid"] for e in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert forward == uuids
    # and a small limit is still a limit
    assert len(client.get(path, params={"limit": 1}, headers=bearer(token)).json()["data"]) == 1


def test_subscribe_replay_pages_through_everything(server: ServerProcess, token: str,
                                                   big_session: tuple[str, list[str]]) -> None:
    session, uuids = big_session
    url = f"{server.ws_url}/v1/sessions/ws/{session}/subscribe?from_sequence_num=0"
    with connect(url, additional_headers=bearer(token), open_timeout=10, max_size=None) as ws:
        frames = [json.loads(ws.recv(timeout=10)) for _ in uuids]
    assert [f["uuid"] for f in frames] == uuids
    assert [f["sequence_num"] for f in frames] == list(range(1, len(uuids) + 1))


def test_worker_streams_page_through_the_backlog(server: ServerProcess, client: httpx.Client, token: str) -> None:
    d = dispatch(client, token)
    events = prompts(8)
    resp = client.post(f"/v1/sessions/{d.session_id}/events", json={"events": events}, headers=bearer(token))
    assert resp.status_code == 200, resp.text
    # v1: the worker socket sends every undelivered prompt after initialize
    with connect(f"{server.ws_url}/v1/session_ingress/ws/{d.session_id}", additional_headers=bearer(d.worker_token),
                 open_timeout=10, max_size=None) as ws:
        lines = [json.loads(ws.recv(timeout=10)) for _ in range(len(events) + 1)]
    assert lines[0]["request"]["subtype"] == "initialize"
    assert [e["uuid"] for e in lines[1:]] == [e["uuid"] for e in events]
    # v2: the SSE stream, from the start and resumed in the middle
    cse = d.session_id.replace("session_", "cse_")
    for start, expect in ((None, events), (3, events[3:])):
        got = _sse_events(server, cse, d.worker_token, start, len(expect))
        assert [e["payload"]["uuid"] for e in got] == [e["uuid"] for e in expect]


def _sse_events(server: ServerProcess, cse: str, token: str, start: int | None, count: int) -> list[dict[str, Any]]:
    query = "" if start is None else f"?from_sequence_num={start}"
    got: list[dict[str, Any]] = []
    with httpx.Client(base_url=server.url, timeout=10) as fresh, \
            fresh.stream("GET", f"/v1/session_ingress/ws/{cse}/worker/events/stream{query}",
                         headers={**bearer(token), "accept": "text/event-stream"}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            if line.startswith("data: "):
                got.append(json.loads(line[6:]))
                if len(got) == count:
                    return got
    raise AssertionError(f"the stream ended after {len(got)} events")


def test_internal_event_pages_are_cut_by_bytes(client: httpx.Client, token: str) -> None:
    sid = client.post("/v1/code/sessions", json={"bridge": {}}, headers=bearer(token)).json()["session"]["id"]
    jwt = client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=bearer(token)).json()["worker_jwt"]
    payloads = [{"type": "transcript", "uuid": str(uuid.uuid4()), "text": "t" * EVENT_TEXT} for _ in range(7)]
    resp = client.post(f"/v1/code/sessions/{sid}/worker/internal-events", headers=bearer(jwt),
                       json={"events": [{"payload": p} for p in payloads]})
    assert resp.status_code == 200, resp.text
    for path, headers in ((f"/v1/code/sessions/{sid}/worker/internal-events", bearer(jwt)),
                          (f"/v1/code/sessions/{sid}/teleport-events", bearer(token))):
        seen: list[str] = []
        cursor = None
        while True:
            page = client.get(path, params={"cursor": cursor} if cursor else {}, headers=headers).json()
            assert 1 <= len(page["data"]) <= 3
            seen += [e["payload"]["uuid"] for e in page["data"]]
            cursor = page.get("next_cursor")
            if cursor is None:
                break
        assert seen == [p["uuid"] for p in payloads], path


def test_every_stored_json_field_is_at_most_1_mib(client: httpx.Client, token: str) -> None:
    big = {"blob": "b" * MiB}
    assert_error(client.post("/v1/sessions", json={"session_context": big}, headers=bearer(token)),
                 413, "payload_too_large")
    assert_error(client.post("/v1/sessions", json={"tags": ["t" * (MiB // 2)] * 3}, headers=bearer(token)),
                 413, "payload_too_large")
    assert_error(client.post("/v1/environments/bridge", json={"machine_name": "m", "metadata": big},
                             headers=bearer(token)), 413, "payload_too_large")
    sid = client.post("/v1/code/sessions", json={"bridge": {}}, headers=bearer(token)).json()["session"]["id"]
    jwt = client.post(f"/v1/code/sessions/{sid}/bridge", json={}, headers=bearer(token)).json()["worker_jwt"]
    worker = f"/v1/code/sessions/{sid}/worker"
    assert_error(client.post(f"{worker}/internal-events", headers=bearer(jwt),
                             json={"events": [{"payload": {"type": "transcript", **big}}]}), 413, "payload_too_large")
    # external_metadata is merged one level deep: two halves that fit alone do not fit together
    half = "h" * (MiB // 2 + 10)
    assert client.put(worker, headers=bearer(jwt), json={"external_metadata": {"a": half}}).status_code == 200
    assert_error(client.put(worker, headers=bearer(jwt), json={"external_metadata": {"b": half}}),
                 413, "payload_too_large")
    assert client.get(worker, headers=bearer(jwt)).json()["worker"]["external_metadata"] == {"a": half}
