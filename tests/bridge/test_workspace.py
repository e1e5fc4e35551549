"""A runner's session directories with the real git, bubblewrap and resource limits."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import subprocess

import pytest

from tether.bridge.agent_process import AgentSpec
from tether.bridge.workspace import RunnerSettings, WorkspaceError, Workspaces, find_bwrap
from tether.protocol.runner_policy import Limits
from tether.protocol.work_secret import WorkSecret

pytestmark = pytest.mark.anyio
SID = "cse_01jz0000000000000000000000"


def _git(cwd: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


@pytest.fixture
def bare_repo(tmp_path: pathlib.Path) -> pathlib.Path:
    src = tmp_path / "repos" / "src"
    src.mkdir(parents=True)
    _git(src, "init", "-q", "-b", "main")
    (src / "hello.txt").write_text("hello from main\n")
    _git(src, "add", ".")
    _git(src, "commit", "-qm", "one")
    _git(src, "checkout", "-q", "-b", "feature")
    (src / "hello.txt").write_text("hello from feature\n")
    _git(src, "commit", "-qam", "two")
    _git(tmp_path / "repos", "clone", "-q", "--bare", "src", "app.git")
    return tmp_path / "repos" / "app.git"


def _secret(**extra: object) -> WorkSecret:
    sources = extra.pop("sources", [])
    auth = extra.pop("auth", [])
    return WorkSecret("tok", "http://x", sources=sources, auth=auth, extra=dict(extra))  # type: ignore[arg-type]


def _workspaces(tmp_path: pathlib.Path, *, roots: tuple[str, ...] = (), bwrap: str | None = None,
                limits: Limits | None = None, kind: str = "tether") -> Workspaces:
    root = tmp_path / "runner"
    root.mkdir(exist_ok=True)
    return Workspaces(RunnerSettings(root=root, limits=limits or Limits(), bwrap=bwrap,
                                     local_roots=tuple(os.path.realpath(r) for r in roots)), kind)


async def test_clones_the_branch_and_removes_everything(tmp_path: pathlib.Path, bare_repo: pathlib.Path) -> None:
    ws_all = _workspaces(tmp_path, roots=(str(bare_repo.parent),), kind="claude")
    ws = await ws_all.prepare(SID, _secret(
        sources=[{"type": "git_repository", "url": str(bare_repo), "revision": "feature"}],
        environment_variables={"GREETING": "hi", "HOME": "/evil"}, claude_code_args={"model": "opus", "add-dir": "/"},
        mcp_config={"mcpServers": {}}, auth=[{"type": "anthropic_api_key", "token": "sk-test"}]))
    assert ws.path == tmp_path / "runner" / "sessions" / "01jz0000000000000000000000"
    assert (ws.cwd / "hello.txt").read_text() == "hello from feature\n"
    assert ws.env["GREETING"] == "hi" and ws.env["HOME"] == str(ws.path / "home")
    assert ws.env["ANTHROPIC_API_KEY"] == "sk-test" and ws.env["TMPDIR"] == str(ws.path / "tmp")
    assert ws.args == ["--model", "opus", "--mcp-config", str(ws.path / "mcp.json")]
    assert (ws.path / "mcp.json").stat().st_mode & 0o777 == 0o600
    assert any("HOME" in w for w in ws.warnings) and any("add-dir" in w for w in ws.warnings)
    await ws_all.remove(ws)
    assert not ws.path.exists()


async def test_no_sources_is_an_empty_work_directory(tmp_path: pathlib.Path) -> None:
    ws = await _workspaces(tmp_path).prepare(SID, _secret())
    assert ws.cwd.is_dir() and list(ws.cwd.iterdir()) == []


async def test_refusals_leave_nothing_behind(tmp_path: pathlib.Path, bare_repo: pathlib.Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    link = bare_repo.parent / "link.git"
    link.symlink_to(outside)  # inside the allowed root, but leads out of it
    ws_all = _workspaces(tmp_path, roots=(str(bare_repo.parent),))
    for url, why in ((str(link), "outside"), ("-uhack", "starts with '-'"), ("ext::sh -c x", "helpers"),
                     (str(outside), "outside")):
        with pytest.raises(WorkspaceError, match=why):
            await ws_all.prepare(SID, _secret(sources=[{"url": url}]))
    with pytest.raises(WorkspaceError, match=r"cloning .* failed"):
        await ws_all.prepare(SID, _secret(sources=[{"url": str(bare_repo.parent / "missing.git")}]))
    with pytest.raises(WorkspaceError, match="failed"):
        await ws_all.prepare(SID, _secret(sources=[{"url": str(bare_repo), "revision": "no-such-branch"}]))
    assert list((tmp_path / "runner" / "sessions").iterdir()) == []


async def test_wipe_stale_and_refuse_to_remove_outside(tmp_path: pathlib.Path) -> None:
    ws_all = _workspaces(tmp_path)
    ws = await ws_all.prepare(SID, _secret())
    assert ws_all.wipe_stale() == [ws.path] and not ws.path.exists()
    ws.path = tmp_path  # never rmtree anything that is not a session directory of this runner
    with pytest.raises(WorkspaceError, match="refusing"):
        await ws_all.remove(ws)
    assert (tmp_path / "runner").is_dir()


async def _run(spec: AgentSpec) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(*spec.argv(), cwd=spec.cwd, env=spec.environment(),
                                                preexec_fn=spec.preexec, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_limits_are_set_in_the_child(tmp_path: pathlib.Path) -> None:
    ws_all = _workspaces(tmp_path, limits=Limits(cpu_s=7, file_mb=1, memory_mb=900))
    ws = await ws_all.prepare(SID, _secret())
    script = "ulimit -t; ulimit -f; ulimit -v; head -c 2000000 /dev/zero > big; echo wrote $(stat -c %s big)"
    spec = AgentSpec(command=["/bin/bash", "-c", script], cwd=str(ws.cwd), preexec=ws_all.preexec())
    code, out = await _run(_bare(spec))
    lines = out.split()
    assert lines[:3] == ["7", str(1024 * 1024 // 1024), str(900 * 1024)], out  # ulimit -f/-v count KiB
    assert "File size limit exceeded" in out or "wrote 1048576" in out, out


def _bare(spec: AgentSpec) -> AgentSpec:
    """The spec's command alone (no stream-json flags): the checks run bash, not an agent."""
    class Bare(AgentSpec):
        def argv(self) -> list[str]:
            return self.wrapper(list(self.command)) if self.wrapper else list(self.command)
    return Bare(command=spec.command, cwd=spec.cwd, preexec=spec.preexec, wrapper=spec.wrapper)


async def test_the_sandbox_keeps_writes_in_the_session(tmp_path: pathlib.Path) -> None:
    bwrap, line = find_bwrap("on")
    assert bwrap is not None, line
    secret_dir = tmp_path / "runner-private"
    secret_dir.mkdir()
    (secret_dir / "db").write_text("secret")
    root = tmp_path / "runner"
    root.mkdir()
    ws_all = Workspaces(RunnerSettings(root=root, bwrap=bwrap, hide=(str(secret_dir), str(root))), "tether")
    ws = await ws_all.prepare(SID, _secret())
    outside = tmp_path / "outside.txt"
    script = (f"echo in > inside.txt && echo ok-inside; echo out > {outside} || echo refused-outside; "
              f"cat {secret_dir}/db || echo hidden; ls {root}/sessions")
    wrapper = ws_all.wrapper(ws)
    assert wrapper is not None
    code, out = await _run(_bare(AgentSpec(command=["/bin/bash", "-c", script], cwd=str(ws.cwd), wrapper=wrapper)))
    assert "ok-inside" in out and "refused-outside" in out and "hidden" in out and "secret" not in out, out
    assert (ws.cwd / "inside.txt").read_text() == "in\n"
    assert not outside.exists()
    assert out.split()[-1] == ws.path.name  # other sessions' directories are not visible


def test_find_bwrap_modes() -> None:
    assert find_bwrap("off")[0] is None
    assert find_bwrap("auto", which=lambda _: None) == (None, find_bwrap("auto", which=lambda _: None)[1])
    with pytest.raises(WorkspaceError, match="bubblewrap"):
        find_bwrap("on", which=lambda _: None)
    assert find_bwrap("auto")[0] == shutil.which("bwrap")
