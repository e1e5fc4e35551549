"""The tools, run directly (real files, real bash)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import time

import pytest

from tests.agent.harness import processes_with, wait_until
from tether.agent.tools import Bash, Edit, Glob, Grep, Read, ToolContext, Write, activity_for, default_tools

pytestmark = pytest.mark.anyio


def ctx(path: pathlib.Path, **kw: float) -> ToolContext:
    return ToolContext(cwd=str(path), **kw)  # type: ignore[arg-type]


async def test_write_read_edit(tmp_path: pathlib.Path) -> None:
    c = ctx(tmp_path)
    out = await Write().run({"file_path": "pkg/a.py", "content": "x = 1\ny = 1\n"}, c)
    assert not out.is_error and out.structured["type"] == "create"
    out = await Write().run({"file_path": "pkg/a.py", "content": "x = 1\ny = 1\n"}, c)
    assert out.structured["type"] == "update" and out.structured["originalFile"] == "x = 1\ny = 1\n"
    out = await Read().run({"file_path": "pkg/a.py"}, c)
    assert out.content == "     1\tx = 1\n     2\ty = 1" and out.structured["file"]["totalLines"] == 2
    out = await Read().run({"file_path": "pkg/a.py", "offset": 2, "limit": 1}, c)
    assert out.content == "     2\ty = 1"
    out = await Edit().run({"file_path": "pkg/a.py", "old_string": "= 1", "new_string": "= 2"}, c)
    assert out.is_error and "Found 2 matches" in out.content
    out = await Edit().run({"file_path": "pkg/a.py", "old_string": "y = 1", "new_string": "y = 2"}, c)
    assert not out.is_error
    out = await Edit().run({"file_path": "pkg/a.py", "old_string": "nope", "new_string": "z"}, c)
    assert out.is_error and "not found" in out.content
    out = await Edit().run({"file_path": "pkg/a.py", "old_string": "= ", "new_string": "== ", "replace_all": True}, c)
    assert not out.is_error
    assert (tmp_path / "pkg/a.py").read_text() == "x == 1\ny == 2\n"
    out = await Edit().run({"file_path": "new.txt", "old_string": "", "new_string": "fresh"}, c)
    assert not out.is_error and (tmp_path / "new.txt").read_text() == "fresh"
    assert (await Read().run({"file_path": "missing.txt"}, c)).is_error
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01")
    assert (await Read().run({"file_path": "bin.dat"}, c)).is_error


async def test_search_tools(tmp_path: pathlib.Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("def main():\n    return 42\n")
    (tmp_path / "src" / "util.py").write_text("MAIN = True\n")
    (tmp_path / "notes.md").write_text("nothing\n")
    c = ctx(tmp_path)
    out = await Glob().run({"pattern": "**/*.py"}, c)
    assert sorted(out.structured["filenames"]) == [str(tmp_path / "src/app.py"), str(tmp_path / "src/util.py")]
    out = await Grep().run({"pattern": "main", "-i": True}, c)
    assert out.structured["numFiles"] == 2
    out = await Grep().run({"pattern": "return", "output_mode": "content"}, c)
    assert out.content == "src/app.py:2:    return 42"
    out = await Grep().run({"pattern": "MAIN", "glob": "*.py", "output_mode": "count"}, c)
    assert out.content == "src/util.py:1"
    assert (await Grep().run({"pattern": "("}, c)).is_error
    out = await default_tools()["LS"].run({}, c)
    assert "  - src/" in out.content and "  - notes.md" in out.content


async def test_bash_output_exit_code_and_cap(tmp_path: pathlib.Path) -> None:
    out = await Bash().run({"command": "pwd; echo err >&2; exit 3"}, ctx(tmp_path))
    assert out.is_error and out.structured["stdout"] == str(tmp_path) and out.structured["stderr"] == "err"
    assert out.content.endswith("Exit code 3")
    out = await Bash().run({"command": "head -c 5000 /dev/zero | tr '\\0' a"}, ToolContext(str(tmp_path), max_output_chars=100))
    assert out.structured["stdout"].startswith("a" * 100) and "4900 more bytes" in out.content


async def test_bash_timeout_kills_the_group(tmp_path: pathlib.Path) -> None:
    started = time.monotonic()
    out = await Bash().run({"command": "python3 -c 'import time; time.sleep(30)  # TIMEOUT-MARK' & sleep 30",
                            "timeout": 300}, ctx(tmp_path))
    assert out.is_error and out.structured["interrupted"] and "timed out" in out.content
    assert time.monotonic() - started < 10
    wait_until(lambda: not processes_with("TIMEOUT-MARK"), 5, "the background child to be gone")


async def test_bash_cancel_kills_the_group(tmp_path: pathlib.Path) -> None:
    marker = tmp_path / "started"
    task = asyncio.create_task(Bash().run(
        {"command": f"touch {marker}; python3 -c 'import time; time.sleep(30)  # CANCEL-MARK' & sleep 30"},
        ctx(tmp_path)))
    await asyncio.to_thread(wait_until, marker.exists, 10, "the command to start")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    wait_until(lambda: not processes_with("CANCEL-MARK"), 5, "the killed child to be gone")


def test_schemas_and_activities(tmp_path: pathlib.Path) -> None:
    tools = default_tools()
    assert sorted(tools) == ["Bash", "Edit", "Glob", "Grep", "LS", "Read", "Write"]
    for tool in tools.values():
        spec = tool.spec()
        assert spec["input_schema"]["type"] == "object" and spec["description"]
        assert tool.permission_class in ("read", "edit", "execute")
    cwd = str(tmp_path)
    assert activity_for("Edit", {"file_path": os.path.join(cwd, "src/app.py")}, cwd) == "Editing src/app.py"
    assert activity_for("Bash", {"command": "ls -la"}, cwd) == "Running ls -la"
    assert tools["Bash"].validate({"command": 3}) is not None
    assert tools["Write"].validate({"file_path": "a"}) == "The required parameter `content` is missing"
    assert tools["Read"].validate({"file_path": "a", "bogus": 1}) is not None
