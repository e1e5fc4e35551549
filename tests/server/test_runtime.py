"""The runtime file and data-directory lock (tether.server.runtime): pure parsing and the lock."""

from __future__ import annotations

import json
import pathlib

from tether.server import runtime

GOOD = {"pid": 42, "url": "http://127.0.0.1:18801", "host": "127.0.0.1", "port": 18801, "data_dir": "/d",
        "started_at": 1.5, "version": "0.1.0", "detached": True, "log_file": "/d/server.log"}


def test_parse_runtime_accepts_the_written_shape_and_rejects_others() -> None:
    info = runtime.parse_runtime(json.dumps(GOOD))
    assert info == runtime.RuntimeInfo(42, "http://127.0.0.1:18801", "127.0.0.1", 18801, "/d", 1.5, "0.1.0",
                                       True, "/d/server.log")
    assert runtime.parse_runtime(json.dumps(info.to_json())) == info
    for bad in ("", "not json", "[]", json.dumps({**GOOD, "pid": 0}), json.dumps({**GOOD, "pid": True}),
                json.dumps({**GOOD, "port": 70000}), json.dumps({**GOOD, "url": ""}),
                json.dumps({**GOOD, "started_at": "x"}), json.dumps({**GOOD, "log_file": 3}),
                json.dumps({k: v for k, v in GOOD.items() if k != "host"})):
        assert runtime.parse_runtime(bad) is None, bad


def test_lock_is_exclusive_and_says_whether_the_runtime_file_is_live(tmp_path: pathlib.Path) -> None:
    assert not runtime.lock_held(tmp_path) and runtime.running_server(tmp_path) is None
    info = runtime.parse_runtime(json.dumps(GOOD))
    assert info is not None
    runtime.write_runtime(tmp_path, info)
    assert (tmp_path / runtime.RUNTIME_FILE).stat().st_mode & 0o777 == 0o600
    assert runtime.running_server(tmp_path) is None, "no lock holder: the runtime file is stale"
    first, second = runtime.ServerLock(tmp_path), runtime.ServerLock(tmp_path)
    assert first.acquire()
    try:
        assert not second.acquire()
        assert runtime.lock_held(tmp_path)
        assert runtime.running_server(tmp_path) == info
    finally:
        first.release()
    assert not runtime.lock_held(tmp_path)
    runtime.remove_runtime(tmp_path, pid=7)  # not ours: kept
    assert runtime.read_runtime(tmp_path) == info
    runtime.remove_runtime(tmp_path, pid=42)
    assert runtime.read_runtime(tmp_path) is None
