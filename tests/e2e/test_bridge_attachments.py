"""Web-composer attachments reach `tether agent` (docs/protocol.md §7.6): a real `tether server` on the
product's default worker transport (v2), a real `tether rc --json` running `tether agent --backend
anthropic` against the fake Messages API. The files are uploaded with ``POST /v1/files``, the prompt
names them in ``file_attachments``; the model must get the text file's lines and the image block."""

from __future__ import annotations

import base64
import pathlib
import struct
import zlib
from collections.abc import Iterator

import pytest

from tests.e2e.bridge_helpers import Api, fresh, in_thread, is_result, open_api
from tests.support.bridge import BridgeProcess
from tests.support.fake_anthropic import FakeAnthropic, last_user_message
from tests.support.server import ServerProcess
from tether.protocol.ids import same_session_id

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(120)]


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


@pytest.fixture
def v2_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("srv"), limits={"rate_per_second": 0},
                         worker_transport="v2").start()
    try:
        yield proc
    finally:
        proc.stop()


async def test_attachments_reach_tether_agent_and_a_missing_one_is_a_warning(
        v2_server: ServerProcess, tmp_path: pathlib.Path) -> None:
    token = v2_server.token()
    project, home = tmp_path / "project", tmp_path / "home"
    project.mkdir()
    with FakeAnthropic() as fake:
        bridge = BridgeProcess(v2_server.url, token, project, home, "--no-create-session-in-dir",
                               agent="tether agent --backend anthropic",
                               env={"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "sk-test"}).start()
        try:
            env_id = await in_thread(lambda: bridge.environment_id)
            async with open_api(v2_server, token) as client:
                api = Api(v2_server, token, client)
                sid = await api.create_session(env_id)
                await in_thread(bridge.wait_for, "session_started", lambda e: same_session_id(e["session_id"], sid))
                sub = await api.subscribe(sid)
                notes = await api.upload("meeting notes.txt", b"ATTACHED-LINE-ONE\nATTACHED-LINE-TWO\n")
                picture = await api.upload("pixel.png", png(), "image/png")
                gone = {"file_uuid": "00000000-0000-4000-8000-000000000000", "file_name": "gone.txt"}
                old = fresh(sub)
                prompt = await api.prompt(sid, "describe these", file_attachments=[notes, picture, gone])
                result = await sub.wait_for(lambda f: is_result(f) and id(f) not in old, timeout=60)
                assert result["subtype"] == "success"
                warning = await sub.wait_for(lambda f: f.get("type") == "system" and f.get("subtype") == "warning",
                                             timeout=10)
                assert warning["prompt_uuid"] == prompt["uuid"] and "gone.txt" in warning["message"]
                await sub.close()
        finally:
            assert await in_thread(bridge.stop) == 0

    folder = project / ".tether" / "attachments" / sid
    notes_path = folder / f"{notes['file_uuid'][:8]}-meeting_notes.txt"
    picture_path = folder / f"{picture['file_uuid'][:8]}-pixel.png"
    assert notes_path.read_bytes() == b"ATTACHED-LINE-ONE\nATTACHED-LINE-TWO\n"
    sent = last_user_message(fake.message_requests()[0].body)
    assert sent is not None
    blocks = sent["content"]
    assert [b["type"] for b in blocks] == ["text", "image", "text", "text"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png",
                                   "data": base64.b64encode(png()).decode()}
    assert blocks[2]["text"] == f'@"{notes_path}" @"{picture_path}" describe these'
    assert "1\tATTACHED-LINE-ONE\n2\tATTACHED-LINE-TWO" in blocks[3]["text"]
