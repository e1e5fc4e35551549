"""Following a file another process appends to (tether.claude.follower), on real files: partial
lines wait for their newline, a truncated or replaced file is read again from the start without
releasing a record twice, a missing file is waited for."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from tether.claude.follower import LineFollower, TranscriptReader


def line(record: dict[str, Any]) -> bytes:
    return json.dumps(record).encode() + b"\n"


def rec(uid: str, parent: str | None = None) -> dict[str, Any]:
    return {"type": "user", "uuid": uid, "parentUuid": parent, "message": {"role": "user", "content": uid}}


def append(path: pathlib.Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_partial_lines_wait_for_their_newline(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.jsonl"
    follower = LineFollower(path)
    assert follower.poll() == []  # missing: waited for
    append(path, b'{"a": 1}\n{"b"')
    assert follower.poll() == [b'{"a": 1}']
    assert follower.poll() == []
    append(path, b': 2}\n')
    assert follower.poll() == [b'{"b": 2}']


def test_a_truncated_file_is_read_again_from_the_start(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"one\ntwo\n")
    follower = LineFollower(path)
    assert follower.poll() == [b"one", b"two"]
    path.write_bytes(b"x\n")  # shorter than what was read
    assert follower.poll() == [b"x"]
    assert follower.restarts == 1


def test_a_replaced_file_is_read_again_from_the_start(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"one\n")
    follower = LineFollower(path)
    assert follower.poll() == [b"one"]
    fresh = tmp_path / "new.jsonl"
    fresh.write_bytes(b"one\ntwo\nthree\n")
    os.replace(fresh, path)  # a rewrite (e.g. a compaction that rewrites the file)
    assert follower.poll() == [b"one", b"two", b"three"]
    assert follower.restarts == 1


def test_switching_files(tmp_path: pathlib.Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_bytes(b"a1\n")
    b.write_bytes(b"b1\nb2\n")
    follower = LineFollower(a)
    assert follower.poll() == [b"a1"]
    follower.switch(b)
    assert follower.poll() == [b"b1", b"b2"]


def test_the_reader_releases_records_in_order_and_once(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "t.jsonl"
    reader = TranscriptReader(path, hold_s=1.0)
    append(path, line(rec("b", "a")) + b'{"type": "mode"}\n' + b"not json\n")
    assert reader.read(0.0) == []  # b waits for its parent
    append(path, line(rec("a")))
    assert [r["uuid"] for r in reader.read(0.1)] == ["a", "b"]
    path.write_bytes(line(rec("a")) + line(rec("b", "a")) + line(rec("c", "b")))  # rewritten
    assert [r["uuid"] for r in reader.read(0.2)] == ["c"]
    append(path, line(rec("e", "d")))
    assert reader.read(0.3) == []
    assert [r["uuid"] for r in reader.read(0.4, final=True)] == ["e"]  # the writer stopped
