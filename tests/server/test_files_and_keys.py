"""Attachments round trip (a user, and the worker of the session that attached a file);
signing-key rotation keeps issued worker tokens valid; tokens record when they were last used."""

from __future__ import annotations

import pathlib
import time
from typing import Any

import httpx
import pytest
from tests.support import database
from tests.support.server import ServerProcess
from tests.support.worker import auth, create_session, register, take_work, user_message, worker_post

pytestmark = pytest.mark.anyio


async def test_file_upload_and_download(server: ServerProcess, owner_token: str) -> None:
    other = server.token(org="files-other", user="f@other", role="owner")
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/files", files={"file": ("notes ../x.txt", b"hello file", "text/plain")},
                              headers=auth(owner_token))
        assert r.status_code == 200, r.text
        meta = r.json()
        assert meta["size"] == 10 and "/" not in meta["file_name"]
        r = await client.get(f"/api/oauth/files/{meta['file_uuid']}/content", headers=auth(owner_token))
        assert r.status_code == 200 and r.content == b"hello file"
        r = await client.get(f"/api/oauth/files/{meta['file_uuid']}/content", headers=auth(other))
        assert r.status_code == 404
        r = await client.post("/v1/files", content=b"{}", headers={**auth(owner_token),
                                                                    "content-type": "application/json"})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def upload(client: httpx.AsyncClient, token: str, name: str, content: bytes) -> str:
    r = await client.post("/v1/files", files={"file": (name, content, "text/plain")}, headers=auth(token))
    assert r.status_code == 200, r.text
    return str(r.json()["file_uuid"])


async def post_prompt(client: httpx.AsyncClient, token: str, sid: str, text: str, **fields: Any) -> None:
    r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [{**user_message(text), **fields}]},
                          headers=auth(token))
    assert r.status_code == 200, r.text


async def test_a_worker_downloads_the_attachments_of_its_own_session_only(server: ServerProcess,
                                                                         owner_token: str) -> None:
    """The session host fetches attachments with its worker token (docs/protocol.md §7.6): a file a
    prompt of *that* session attached, of its org; anything else is 404, as if it did not exist."""
    other_org = server.token(org="files-worker-other", user="w@other", role="owner")
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        env = await register(client, owner_token)
        sids = [await create_session(client, owner_token, env["environment_id"]) for _ in range(2)]
        tokens: dict[str, str] = {}
        for _ in sids:
            item, token = await take_work(client, env)
            tokens[item["data"]["id"]] = token
        mine, theirs = tokens[sids[0]], tokens[sids[1]]
        attached = await upload(client, owner_token, "a.txt", b"attached to session one")
        unattached = await upload(client, owner_token, "b.txt", b"never attached")
        foreign = await upload(client, other_org, "c.txt", b"another org's file")
        await post_prompt(client, owner_token, sids[0], "with files", file_attachments=[
            {"file_uuid": attached, "file_name": "a.txt"}, {"file_uuid": foreign, "file_name": "c.txt"}])
        await post_prompt(client, owner_token, sids[0], f"only named in the text: {unattached}")

        def get(file_uuid: str, token: str) -> Any:
            return client.get(f"/api/oauth/files/{file_uuid}/content", headers=auth(token))

        r = await get(attached, mine)
        assert r.status_code == 200 and r.content == b"attached to session one"
        for file_uuid, token in ((attached, theirs), (unattached, mine), (foreign, mine)):
            r = await get(file_uuid, token)
            assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error", (file_uuid, r.text)
        r = await get(attached, mine[:-4] + "AAAA")
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        r = await get(attached, owner_token)  # people of the org still can
        assert r.status_code == 200


def last_used_in_db(server: ServerProcess, token_id: str) -> float | None:
    _, rows = database.execute(server.data_dir, "SELECT last_used_at FROM tokens WHERE id = :id", {"id": token_id})
    return None if rows[0][0] is None else float(rows[0][0])


async def test_a_token_records_its_last_use_at_most_once_a_minute(server: ServerProcess, owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/tokens", json={"name": "last-used"}, headers=auth(owner_token))
        assert r.status_code == 200, r.text
        made = r.json()
        assert made["last_used_at"] is None and last_used_in_db(server, made["id"]) is None
        before = time.time()
        assert (await client.get("/v1/me", headers=auth(made["token"]))).status_code == 200
        first = last_used_in_db(server, made["id"])
        assert first is not None and before - 1 <= first <= time.time() + 1
        listed = (await client.get("/v1/tokens", headers=auth(owner_token))).json()["data"]
        shown = next(t for t in listed if t["id"] == made["id"])["last_used_at"]
        assert shown is not None and shown.startswith(time.strftime("%Y-%m-%d", time.gmtime(first)))
        for _ in range(3):  # used again within the minute: the row is not written again
            assert (await client.get("/v1/me", headers=auth(made["token"]))).status_code == 200
        assert last_used_in_db(server, made["id"]) == first


async def test_rotated_keys_keep_old_worker_tokens_valid(tmp_path: pathlib.Path) -> None:
    srv = ServerProcess(tmp_path).start()
    try:
        token = srv.token()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            env = await register(client, token)
            sid = await create_session(client, token, env["environment_id"])
            _, old_worker_token = await take_work(client, env)
        srv.stop()
        kid = srv.admin("rotate-keys")
        assert kid.startswith("k")
        srv.start()
        async with httpx.AsyncClient(base_url=srv.url, timeout=15) as client:
            await worker_post(client, sid, old_worker_token, {"type": "assistant", "uuid": "u-1", "message": {}})
            r = await client.post(f"/v1/environments/{env['environment_id']}/bridge/reconnect",
                                  json={"session_id": sid}, headers=auth(token))
            assert r.status_code == 200
            _, new_token = await take_work(client, env)
            import jwt

            assert jwt.get_unverified_header(new_token)["kid"] == kid
    finally:
        srv.stop()


def test_env_based_work_defaults_to_v2() -> None:
    from tether.server.config import Config

    assert Config().worker_transport == "v2"


@pytest.mark.parametrize("declared", ["text/plain\x01", "text/html\x7f; x=1", "image/png\x00", "a b/c", "x" * 300])
async def test_a_bad_content_type_is_stored_as_octet_stream(server: ServerProcess, owner_token: str,
                                                            declared: str) -> None:
    """A control character in a part's Content-Type made the file undownloadable (issue #11)."""
    body = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="c.bin"\r\n'
            b"Content-Type: " + declared.encode("latin-1") + b"\r\n\r\nbytes\r\n--xyz--\r\n")
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/files", content=body, headers={
            **auth(owner_token), "content-type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 200, r.text
        r = await client.get(f"/api/oauth/files/{r.json()['file_uuid']}/content", headers=auth(owner_token))
        assert r.status_code == 200 and r.content == b"bytes"
        assert r.headers["content-type"] == "application/octet-stream"


async def test_a_well_formed_content_type_is_kept_and_old_bad_rows_download(server: ServerProcess,
                                                                            owner_token: str) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        r = await client.post("/v1/files", files={"file": ("a.txt", b"text", "text/plain; charset=utf-8")},
                              headers=auth(owner_token))
        file_uuid = r.json()["file_uuid"]
        url = f"/api/oauth/files/{file_uuid}/content"
        r = await client.get(url, headers=auth(owner_token))
        assert r.headers["content-type"] == "text/plain; charset=utf-8"
        database.execute(server.data_dir, "UPDATE files SET content_type = :bad WHERE id = :id",
                         {"bad": "text/plain\x01\n", "id": file_uuid})
        r = await client.get(url, headers=auth(owner_token))
        assert r.status_code == 200 and r.content == b"text"
        assert r.headers["content-type"] == "application/octet-stream"
