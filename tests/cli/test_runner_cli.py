"""`tether runner` / `tether server --runner` / `tether --remote`: the command lines, before anything runs."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tether.cli.runner_child import local_url, runner_argv


def _tether(*args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)


def test_runner_argv_hides_the_server_data_and_passes_options(tmp_path: pathlib.Path) -> None:
    argv = runner_argv(tmp_path, agent="tether agent --backend scripted", capacity=2,
                       allow_local=[tmp_path / "repos"], time_limit=30.0)
    data = str(tmp_path.resolve())
    assert argv[1:4] == ["-m", "tether.cli.main", "runner"]
    assert argv[argv.index("--data-dir") + 1] == f"{data}/runner"
    assert argv[argv.index("--hide") + 1] == data
    assert argv[argv.index("--agent") + 1] == "tether agent --backend scripted"
    assert argv[argv.index("--allow-local") + 1] == str(tmp_path / "repos")
    assert "--json" in argv and argv[argv.index("--time-limit") + 1] == "30.0"
    assert "--agent" not in runner_argv(tmp_path, agent=None, capacity=None, allow_local=[], time_limit=None)


def test_local_url() -> None:
    assert local_url("0.0.0.0", 8787, False, None) == "http://127.0.0.1:8787"
    assert local_url("127.0.0.1", 9, False, "https://public.example") == "http://127.0.0.1:9"
    assert local_url("::1", 9, False, None) == "http://[::1]:9"
    assert local_url("0.0.0.0", 9, True, "https://tether.example/") == "https://tether.example"


@pytest.mark.parametrize("args, message", [
    (("runner", "--sandbox", "maybe"), "--sandbox must be auto, on or off"),
    (("runner", "--capacity", "0"), "--capacity"),
    (("runner", "--cpu-limit", "0"), "CPU limit must be positive"),
    (("runner", "--memory-limit", "10"), "64 MB"),
    (("runner", "--allow-local", "/no/such/dir"), "not a directory"),
    (("server", "--runner-agent", "tether"), "need --runner"),
    (("--repo", "x", "sessions"), "go with --remote"),
    (("--remote", "hi", "sessions"), "cannot be used with"),
])
def test_usage_errors(args: tuple[str, ...], message: str, tmp_path: pathlib.Path) -> None:
    out = _tether(*args, cwd=tmp_path)
    assert out.returncode == 2, out
    assert message in " ".join(out.stderr.split()), out.stderr
