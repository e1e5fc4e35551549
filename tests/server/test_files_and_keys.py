"""Attachments round trip; signing-key rotation keeps issued worker tokens valid."""

from __future__ import annotations

import pathlib
import sqlite3

import httpx
import pytest
from tests.support.server import ServerProcess
from tests.support.worker import auth, create_session, register, take_work, worker_post

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
        db = sqlite3.connect(server.data_dir / "tether.db", timeout=30)
        with db:
            db.execute("UPDATE files SET content_type = ? WHERE id = ?", ("text/plain\x01\n", file_uuid))
        db.close()
        r = await client.get(url, headers=auth(owner_token))
        assert r.status_code == 200 and r.content == b"text"
        assert r.headers["content-type"] == "application/octet-stream"
