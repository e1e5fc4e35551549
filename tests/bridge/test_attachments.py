"""AttachmentFetcher against a scripted loopback server: the failures a real server seldom
produces on cue (no answer, a huge body, a dead port) skip the file and never the prompt."""

from __future__ import annotations

import asyncio
import pathlib
from typing import Any

import pytest
from tests.support.fake_http import FakeHTTP, Reply, Request
from tests.support.server import free_port

from tether.bridge.attachments import AttachmentFetcher
from tether.errors import ApiUnavailable

pytestmark = pytest.mark.anyio


def prompt(*entries: tuple[str, str]) -> dict[str, Any]:
    return {"type": "user", "uuid": "u-1", "message": {"role": "user", "content": "look"},
            "file_attachments": [{"file_uuid": u, "file_name": n} for u, n in entries]}


async def test_downloads_with_the_current_token_and_skips_what_fails(tmp_path: pathlib.Path) -> None:
    release = asyncio.Event()

    async def handler(req: Request) -> Reply:
        file_uuid = req.path.split("/")[-2]
        if file_uuid == "slow":
            await release.wait()
        if file_uuid == "huge":
            return Reply(200, b"x" * 2048)
        if file_uuid == "broken":
            return Reply(500, b"<html>oops</html>")
        return Reply(200, f"content of {file_uuid} for {req.headers['authorization']}".encode())

    async with FakeHTTP(handler) as fake:
        fetcher = AttachmentFetcher(fake.url + "/", "tok-1", str(tmp_path), "session_abc", timeout=0.5,
                                    max_bytes=1024)
        fetcher.set_token("tok-2")  # a re-dispatch: downloads use the new token
        out = await fetcher.resolve(prompt(("good-1", "a.txt"), ("slow", "s.txt"), ("huge", "h.bin"),
                                           ("broken", "b.txt")))
        release.set()
    folder = tmp_path / ".tether" / "attachments" / "session_abc"
    assert out.stored == (str(folder / "good-1-a.txt"),)
    assert (folder / "good-1-a.txt").read_text() == "content of good-1 for Bearer tok-2"
    assert sorted(p.name for p in folder.iterdir()) == ["good-1-a.txt"]  # no partial files left
    assert {s.file_name: s.reason for s in out.skipped} == {
        "s.txt": "the download took longer than 0.5 s",
        "h.bin": "it is larger than 1024 bytes",
        "b.txt": "the server answered 500",
    }
    assert out.message["message"]["content"] == f'@"{folder / "good-1-a.txt"}" look'
    assert out.message["uuid"] == "u-1" and "file_attachments" not in out.message
    assert [r.path for r in fake.requests if r.path.endswith("good-1/content")] == ["/api/oauth/files/good-1/content"]


async def test_a_server_that_is_gone_skips_every_file(tmp_path: pathlib.Path) -> None:
    fetcher = AttachmentFetcher(f"http://127.0.0.1:{free_port()}", "tok", str(tmp_path), "session_x", timeout=5)
    out = await fetcher.resolve(prompt(("a", "a.txt")))
    assert out.stored == () and len(out.skipped) == 1
    assert out.skipped[0].reason.startswith("the download failed")
    assert out.message["message"]["content"] == "look"


async def test_a_file_that_cannot_be_saved_is_skipped(tmp_path: pathlib.Path) -> None:
    async def handler(req: Request) -> Reply:
        return Reply(200, b"data")

    (tmp_path / ".tether").write_text("a file where the folder should be")
    async with FakeHTTP(handler) as fake:
        out = await AttachmentFetcher(fake.url, "tok", str(tmp_path), "session_x").resolve(prompt(("a", "a.txt")))
    assert out.stored == () and out.skipped[0].reason.startswith("it could not be saved")


async def test_a_token_source_is_read_per_prompt_and_a_missing_login_skips_the_files(tmp_path: pathlib.Path) -> None:
    """The REPL bridge core downloads with the person's login, read (and refreshed) per prompt."""
    tokens = iter(["login-1", "login-2"])

    async def login() -> str:
        return next(tokens)

    async def handler(req: Request) -> Reply:
        return Reply(200, req.headers["authorization"].encode())

    async with FakeHTTP(handler) as fake:
        fetcher = AttachmentFetcher(fake.url, login, str(tmp_path), "session_t")
        first = await fetcher.resolve(prompt(("one", "1.txt")))
        second = await fetcher.resolve(prompt(("two", "2.txt")))
    folder = tmp_path / ".tether" / "attachments" / "session_t"
    assert first.stored + second.stored == (str(folder / "one-1.txt"), str(folder / "two-2.txt"))
    assert [(folder / n).read_text() for n in ("one-1.txt", "two-2.txt")] == ["Bearer login-1", "Bearer login-2"]
    assert first.warning("session_t") is None

    async def logged_out() -> str:
        raise ApiUnavailable("the login could not be refreshed")

    out = await AttachmentFetcher(fake.url, logged_out, str(tmp_path), "session_t").resolve(prompt(("a", "a.txt")))
    assert out.stored == () and out.message["message"]["content"] == "look"
    warning = out.warning("session_t")
    assert warning is not None and warning["prompt_uuid"] == "u-1" and warning["session_id"] == "session_t"
    assert warning["message"] == ("The attachment a.txt did not reach the agent: there is no credential to "
                                  "download it with (the login could not be refreshed).")
