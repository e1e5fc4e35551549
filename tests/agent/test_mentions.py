"""``@path`` references in a prompt: found, read and rendered the way the stock CLI does
(the forms below were observed with claude 2.1.197 against the fake Messages API)."""

from __future__ import annotations

import base64
import pathlib
import struct
import zlib
from typing import Any

import pytest

from tests.agent.harness import STREAM_ARGS, run_turn
from tests.support.fake_anthropic import FakeAnthropic, last_user_message
from tether.agent.mentions import (
    MAX_TEXT_BYTES,
    Image,
    Listing,
    Mention,
    TextFile,
    expand_prompt,
    expanded_content,
    find_mentions,
    load,
    render_text,
)

pytestmark = pytest.mark.anyio


def png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b""))


def test_what_counts_as_a_reference() -> None:
    assert find_mentions('@"/tmp/a b.txt" and @notes.txt') == [Mention("/tmp/a b.txt"), Mention("notes.txt")]
    assert find_mentions("see @notes.txt, ok") == [Mention("notes.txt")]
    assert find_mentions("@dir/ and @./x.py.") == [Mention("dir"), Mention("./x.py")]
    assert find_mentions("mail foo@notes.txt (@notes.txt) @ @... @\"\"") == []
    assert find_mentions("@notes.txt#L2 @notes.txt#L3-5 @b#L9-2") == [
        Mention("notes.txt", 2, 2), Mention("notes.txt", 3, 5), Mention("b", 9, 9)]
    assert find_mentions("@a @a\n@a") == [Mention("a")]
    assert find_mentions("line one\n@~/x.md") == [Mention("~/x.md")]
    assert len(find_mentions(" ".join(f"@f{i}" for i in range(50)))) == 20


def test_a_text_file_reads_like_the_cli_read_call() -> None:
    item = TextFile("/p/notes.txt", "SECRET-TEXT-42\nline two\n")
    assert render_text(item) == ('Called the Read tool with the following input: {"file_path":"/p/notes.txt"}\n'
                                 "Result of calling the Read tool:\n1\tSECRET-TEXT-42\n2\tline two\n3\t")
    ranged = TextFile("/p/notes.txt", "a\nb\nc\n", 2, 3)
    assert render_text(ranged).endswith("Result of calling the Read tool:\n2\tb\n3\tc")
    assert render_text(TextFile("/p/é.txt", "x", 5, 9)).endswith("tool:\n")  # past the end: no lines


def test_expanded_content_puts_images_first_and_file_text_last() -> None:
    loaded = [TextFile("/p/a.txt", "hello"), Image("/p/i.png", "image/png", "AAAA"), Listing("/p/d", ("x", "y"))]
    content = expanded_content("look at @a.txt", loaded)
    assert [b["type"] for b in content] == ["text", "image", "text", "text", "text"]
    assert content[0]["text"] == ('<system-reminder>\nCalled the Read tool with the following input: '
                                  '{"file_path":"/p/i.png"}\n</system-reminder>')
    assert content[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
    assert content[2] == {"type": "text", "text": "look at @a.txt"}
    assert content[3]["text"].startswith("<system-reminder>\nCalled the Read tool") and "1\thello" in content[3]["text"]
    assert content[4]["text"] == ('<system-reminder>\nCalled the Bash tool with the following input: '
                                  '{"command":"ls /p/d","description":"Lists files in /p/d"}\n'
                                  "Result of calling the Bash tool:\nx\ny\n</system-reminder>")
    blocks = [{"type": "text", "text": "t"}]
    assert expanded_content(blocks, []) is blocks
    assert expanded_content("plain", []) == "plain"


def test_loading_what_a_reference_names(tmp_path: pathlib.Path) -> None:
    (tmp_path / "notes.txt").write_text("one\ntwo\n")
    (tmp_path / "pic.png").write_bytes(png())
    (tmp_path / "blob.bin").write_bytes(b"\x01\x00\x02" * 10)
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "b").write_text("")
    (tmp_path / "dir" / "a").write_text("")
    (tmp_path / "dir" / ".hidden").write_text("")
    (tmp_path / "big.txt").write_text("line of text\n" * (MAX_TEXT_BYTES // 13 + 100))
    cwd = str(tmp_path)
    assert load(Mention("notes.txt", 2, 2), cwd) == TextFile(f"{cwd}/notes.txt", "one\ntwo\n", 2, 2)
    image = load(Mention(f"{cwd}/pic.png"), cwd)
    assert isinstance(image, Image) and image.media_type == "image/png"
    assert base64.b64decode(image.data) == png()
    assert load(Mention("dir"), cwd) == Listing(f"{cwd}/dir", ("a", "b"))
    assert load(Mention("blob.bin"), cwd) is None
    assert load(Mention("missing.txt"), cwd) is None
    assert load(Mention("bad\x00name"), cwd) is None
    big = load(Mention("big.txt"), cwd)
    assert isinstance(big, TextFile) and big.truncated and big.text.endswith("line of text\n")
    assert len(big.text) <= MAX_TEXT_BYTES
    assert "The file is longer" in render_text(big)


async def test_expand_prompt_reads_in_a_thread(tmp_path: pathlib.Path) -> None:
    (tmp_path / "a.txt").write_text("alpha")
    assert await expand_prompt("nothing here", str(tmp_path)) == "nothing here"
    assert await expand_prompt("@missing", str(tmp_path)) == "@missing"
    out = await expand_prompt([{"type": "text", "text": "read @a.txt"}], str(tmp_path))
    assert out[0] == {"type": "text", "text": "read @a.txt"} and "1\talpha" in out[1]["text"]


def test_the_agent_sends_the_files_to_the_model(spawn_agent: Any, fake_api: FakeAnthropic,
                                                workdir: pathlib.Path) -> None:
    """The real `tether agent` process: the model gets the text and the image; the echo and the
    history keep the prompt as it was typed."""
    (workdir / "notes.txt").write_text("SECRET-TEXT-42\n")
    (workdir / "pic.png").write_bytes(png())
    proc = spawn_agent(args=STREAM_ARGS, env={"ANTHROPIC_BASE_URL": fake_api.url, "ANTHROPIC_API_KEY": "k"},
                       backend="anthropic")
    prompt = f'what are @notes.txt and @"{workdir}/pic.png"?'
    msgs, result = run_turn(proc, prompt)
    assert result["subtype"] == "success"
    echo = next(m for m in msgs if m.get("type") == "user" and m.get("isReplay"))
    assert echo["message"]["content"] == prompt
    sent = last_user_message(fake_api.message_requests()[0].body)
    assert sent is not None
    kinds = [b["type"] for b in sent["content"]]
    assert kinds == ["text", "image", "text", "text"]
    assert sent["content"][1]["source"]["media_type"] == "image/png"
    assert sent["content"][2]["text"] == prompt
    assert "1\tSECRET-TEXT-42" in sent["content"][3]["text"]
