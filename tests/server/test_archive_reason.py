"""Why a session ended, and the session that continues it (issue #10 item 3, docs/protocol.md §4.2)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from tests.support.api import assert_error, bearer, create_session, register_environment
from tests.support.server import ServerProcess


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


def archive(client: httpx.Client, token: str, sid: str, **body: str) -> httpx.Response:
    return client.post(f"/v1/sessions/{sid}/archive", json=body, headers=bearer(token))


def test_archive_records_the_reason_and_a_restart_links_the_successor(client: httpx.Client,
                                                                      owner_token: str) -> None:
    where = {"machine_name": "laptop", "directory": "/work/restart-linking"}
    env, _ = register_environment(client, owner_token, **where)
    first = create_session(client, owner_token, env)["id"]
    fresh = client.get(f"/v1/sessions/{first}", headers=bearer(owner_token)).json()
    assert (fresh["archive_reason"], fresh["successor_session_id"], fresh["archived_at"]) == (None, None, None)

    done = archive(client, owner_token, first, reason="replaced")
    assert done.status_code == 200 and done.json()["archive_reason"] == "replaced"
    assert done.json()["successor_session_id"] is None and done.json()["archived_at"]

    # another environment of the same machine and directory (a restarted bridge): the successor
    env2, _ = register_environment(client, owner_token, **where)
    second = create_session(client, owner_token, env2)["id"]
    assert client.get(f"/v1/sessions/{first}", headers=bearer(owner_token)).json()["successor_session_id"] == second
    listed = client.get("/v1/sessions?status=archived", headers=bearer(owner_token)).json()["data"]
    assert [(s["archive_reason"], s["successor_session_id"]) for s in listed if s["id"] == first] == [
        ("replaced", second)]

    # linked once: a third session does not take the first one's place
    third = create_session(client, owner_token, env2)["id"]
    assert client.get(f"/v1/sessions/{first}", headers=bearer(owner_token)).json()["successor_session_id"] == second

    # a session a person archived, or whose agent finished, has no successor
    for reason in ("user", "session_ended"):
        assert archive(client, owner_token, third, reason=reason).status_code == 200
        create_session(client, owner_token, env2)
        assert client.get(f"/v1/sessions/{third}", headers=bearer(owner_token)).json()["successor_session_id"] is None
        third = create_session(client, owner_token, env2)["id"]
    nxt = third

    # another directory of the same machine is another place
    assert archive(client, owner_token, nxt, reason="bridge_failed").status_code == 200
    elsewhere, _ = register_environment(client, owner_token, machine_name="laptop", directory="/work/other")
    create_session(client, owner_token, elsewhere)
    assert client.get(f"/v1/sessions/{nxt}", headers=bearer(owner_token)).json()["successor_session_id"] is None
    after = create_session(client, owner_token, env2)["id"]
    assert client.get(f"/v1/sessions/{nxt}", headers=bearer(owner_token)).json()["successor_session_id"] == after


def test_archive_refuses_an_unknown_reason(client: httpx.Client, owner_token: str) -> None:
    env, _ = register_environment(client, owner_token, directory="/work/bad-reason")
    sid = create_session(client, owner_token, env)["id"]
    for bad in ("because", 3, ""):
        resp = client.post(f"/v1/sessions/{sid}/archive", json={"reason": bad}, headers=bearer(owner_token))
        error = assert_error(resp, 400, "invalid_request_error")
        assert "'reason' must be one of user, bridge_stopped" in error["message"]
    assert client.get(f"/v1/sessions/{sid}", headers=bearer(owner_token)).json()["session_status"] != "archived"
    assert archive(client, owner_token, sid).json()["archive_reason"] is None  # no reason: none recorded
