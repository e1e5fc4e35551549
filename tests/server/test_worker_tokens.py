"""A worker token writes only while its work item is live (issue #11 item 4; docs/protocol.md
§4.1, §4.4): once the work is stopped (or its environment deregistered) with nothing after it,
v1 ingress and the v2 ``/worker/*`` routes answer 410 ``work_gone`` and its open socket /
stream closes; once the session was re-dispatched, the old token's writes get 401 (its bridge
adopts the new token) while its reads go on; an archived session stays 409 ``already_archived``.

Real server; the worker is this test speaking the wire protocol.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from tests.support.api import assert_error, bearer, dispatch, mint_token, poll_work, ws_close_code
from tests.support.server import ServerProcess
from websockets.sync.client import connect

from tether.protocol.work_secret import decode_work_secret

ASSISTANT = {"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "hi"}]}}
PROMPT = {"type": "user", "message": {"role": "user", "content": "hello"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """No hand-over grace: an old token is replaced as soon as the new item is acked."""
    with ServerProcess(tmp_path_factory.mktemp("tokens"), limits={"rate_per_second": 0},
                       worker_handover_s=0) as proc:
        yield proc


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


@pytest.fixture(scope="module")
def owner(server: ServerProcess) -> str:
    return mint_token(server.data_dir)


def _v1_post(client: httpx.Client, cse_id: str, token: str) -> httpx.Response:
    return client.post(f"/v1/session_ingress/session/{cse_id}/events", json={"events": [ASSISTANT]},
                       headers=bearer(token))


def _v2_post(client: httpx.Client, cse_id: str, token: str) -> httpx.Response:
    return client.post(f"/v1/code/sessions/{cse_id}/worker/events", json={"events": [{"payload": ASSISTANT}]},
                       headers=bearer(token))


def test_stopped_work_ends_the_worker_token(server: ServerProcess, client: httpx.Client, owner: str) -> None:
    d = dispatch(client, owner)
    assert _v1_post(client, d.cse_id, d.worker_token).status_code == 200
    with connect(f"{server.ws_url}/v1/session_ingress/ws/{d.cse_id}", additional_headers=bearer(d.worker_token),
                 open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["request"]["subtype"] == "initialize"
        stop = client.post(f"/v1/environments/{d.environment_id}/work/{d.work['id']}/stop", json={"force": True},
                           headers=bearer(owner))
        assert stop.status_code == 200, stop.text
        assert ws_close_code(ws) == 4003  # pushed by the stop, not found at the next write
    assert_error(_v1_post(client, d.cse_id, d.worker_token), 410, "work_gone")
    assert_error(_v2_post(client, d.cse_id, d.worker_token), 410, "work_gone")
    assert_error(client.post(f"/v1/code/sessions/{d.cse_id}/worker/heartbeat", json={},
                             headers=bearer(d.worker_token)), 410, "work_gone")
    assert_error(client.post(f"/v1/environments/{d.environment_id}/work/{d.work['id']}/heartbeat", json={},
                             headers=bearer(d.worker_token)), 410, "work_gone")
    with connect(f"{server.ws_url}/v1/session_ingress/ws/{d.cse_id}", additional_headers=bearer(d.worker_token),
                 open_timeout=10) as ws:
        assert ws_close_code(ws) == 4003
    # nothing the dead token sent after the stop reached the log
    events = client.get(f"/v1/sessions/{d.session_id}/events", headers=bearer(owner)).json()["data"]
    assert sum(e["type"] == "assistant" for e in events) == 1, events


def test_deregistered_environment_ends_the_stream(server: ServerProcess, client: httpx.Client, owner: str) -> None:
    d = dispatch(client, owner)
    url = f"/v1/code/sessions/{d.cse_id}/worker/events/stream"
    with client.stream("GET", url, headers=bearer(d.worker_token)) as stream:
        assert stream.status_code == 200
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        gone = client.delete(f"/v1/environments/bridge/{d.environment_id}", headers=bearer(owner))
        assert gone.status_code == 200, gone.text
        rest = list(lines)  # the server ends the stream: iteration stops
        assert all(not line.startswith("event:") for line in rest), rest
    assert_error(_v2_post(client, d.cse_id, d.worker_token), 410, "work_gone")
    assert_error(_v1_post(client, d.cse_id, d.worker_token), 410, "work_gone")
    reopened = client.get(url, headers=bearer(d.worker_token))
    assert_error(reopened, 410, "work_gone")


def test_redispatch_replaces_the_token_without_cutting_the_reader(server: ServerProcess, client: httpx.Client,
                                                                  owner: str) -> None:
    """E7 (token refresh): the old token writes until its bridge took the new item (ack, plus
    ``worker_handover_s``, 0 here), then gets 401 (its writer keeps the events for the new
    token); its socket keeps delivering; the new token writes."""
    d = dispatch(client, owner)
    with connect(f"{server.ws_url}/v1/session_ingress/ws/{d.cse_id}", additional_headers=bearer(d.worker_token),
                 open_timeout=10) as ws:
        assert json.loads(ws.recv(timeout=10))["request"]["subtype"] == "initialize"
        again = client.post(f"/v1/environments/{d.environment_id}/bridge/reconnect",
                            json={"session_id": d.session_id}, headers=bearer(owner))
        assert again.status_code == 200, again.text
        work = poll_work(client, d.environment_id, d.environment_secret)
        new_token = decode_work_secret(work["secret"]).session_ingress_token
        assert work["id"] != d.work["id"] and new_token != d.worker_token
        assert _v1_post(client, d.cse_id, d.worker_token).status_code == 200  # handed over, not taken yet
        ack = client.post(f"/v1/environments/{d.environment_id}/work/{work['id']}/ack", json={},
                          headers=bearer(new_token))
        assert ack.status_code == 200, ack.text

        assert_error(_v1_post(client, d.cse_id, d.worker_token), 401, "authentication_error")
        assert_error(_v2_post(client, d.cse_id, d.worker_token), 401, "authentication_error")
        assert _v1_post(client, d.cse_id, new_token).status_code == 200
        assert _v2_post(client, d.cse_id, new_token).status_code == 200
        # the old socket still reads: a prompt posted now is delivered on it
        posted = client.post(f"/v1/sessions/{d.session_id}/events", json={"events": [PROMPT]},
                             headers=bearer(owner))
        assert posted.status_code == 200, posted.text
        while (frame := json.loads(ws.recv(timeout=10)))["type"] != "user":
            pass
        assert frame["message"]["content"] == "hello"


def test_archived_session_stays_409(client: httpx.Client, owner: str) -> None:
    d = dispatch(client, owner)
    archived = client.post(f"/v1/sessions/{d.session_id}/archive", json={}, headers=bearer(owner))
    assert archived.status_code == 200, archived.text
    assert_error(_v1_post(client, d.cse_id, d.worker_token), 409, "already_archived")
    assert_error(_v2_post(client, d.cse_id, d.worker_token), 409, "already_archived")
