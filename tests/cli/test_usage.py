"""How the commands explain themselves (issue #10 item 10): bad --server values, unreachable
servers, unknown options, and help and status that read well in an 80-column terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from tests.support.api import register_environment
from tests.support.server import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.timeout(120)
LONG_DIR = "/home/someone/projects/a-rather-long-project-name/with/a/deep/subdirectory"


def tether(*args: str, home: str, columns: int = 80, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    clean.update(TETHER_HOME=home, COLUMNS=str(columns), NO_COLOR="1", TERM="dumb", **env)
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], capture_output=True, text=True,
                          timeout=60, env=clean, cwd=ROOT, stdin=subprocess.DEVNULL)


def test_a_server_value_that_is_no_url_is_refused_alike_everywhere(tmp_path: object) -> None:
    home = str(tmp_path)
    login = tether("login", "--server", "not-a-url", home=home)
    assert login.returncode == 2 and "does not look like a server URL" in login.stderr
    for args in (("rc", "--server", "not-a-url"), ("remote-control", "--server", "not-a-url"),
                 ("status", "--server", "not-a-url")):
        result = tether(*args, home=home)
        assert (result.returncode, result.stderr) == (2, login.stderr), args
    spaced = tether("rc", "--server", "not a url", home=home)
    assert spaced.returncode == 2 and "is not a host name" in spaced.stderr and "tether login" not in spaced.stderr


def test_an_unreachable_server_is_named_once(tmp_path: object) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    result = tether("login", "--server", dead, home=str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.count("Cannot reach") == 1 and result.stderr.count(dead) == 1, result.stderr
    bridge = tether("rc", "--server", dead, "--agent", "tether", home=str(tmp_path), TETHER_TOKEN="tpt_x")
    assert bridge.returncode == 1 and bridge.stderr.count("Cannot reach") == 1, bridge.stderr


def test_an_unknown_option_gets_real_suggestions(tmp_path: object) -> None:
    bogus = tether("rc", "--bogus", home=str(tmp_path))
    assert bogus.returncode == 2
    assert "No such option: --bogus. The options are: --agent, --capacity, --continue," in bogus.stderr
    assert "--verbose" in bogus.stderr and "Possible options" not in bogus.stderr
    typo = tether("rc", "--contine", home=str(tmp_path))
    assert typo.returncode == 2 and "No such option: --contine. Did you mean --continue?" in typo.stderr
    up = tether("up", "--scenaro", "x", home=str(tmp_path))
    assert up.returncode == 2 and "Did you mean --scenario?" in up.stderr


@pytest.mark.parametrize("command", [(), ("rc",), ("remote-control",), ("up",), ("status",), ("login",),
                                     ("server",), ("server", "status"), ("sessions",), ("attach",), ("runner",), ("chat",)])
def test_help_reads_well_at_80_columns(command: tuple[str, ...], tmp_path: object) -> None:
    result = tether(*command, "--help", home=str(tmp_path))
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "<bool>" not in text and "…" not in text and "..." not in text.replace("[ARGS]...", ""), text
    if command in (("rc",), ("remote-control",)):
        for whole in ("--create-session-in-dir / --no-create-session-in-dir", "session|same-dir|worktree",
                      "acceptEdits,", "bypassPermissions,", "dontAsk, plan", "-c, --continue", "--server URL"):
            assert whole in " ".join(text.split()), whole


def test_status_reads_well_at_80_columns(server: ServerProcess, owner_token: str, tmp_path: object) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        env_id, _ = register_environment(client, owner_token, machine_name="laptop.example.internal",
                                         directory=LONG_DIR, branch="feature/a-long-branch-name")
    result = tether("status", home=str(tmp_path), TETHER_SERVER=server.url, TETHER_TOKEN=owner_token)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert f"laptop.example.internal:{LONG_DIR}" in [ln.strip() for ln in lines]
    assert any(env_id in ln and "online" in ln and "/4 sessions" in ln for ln in lines), result.stdout
    assert "branch feature/a-long-branch-name" in result.stdout and "┃" not in result.stdout
    wide = tether("status", home=str(tmp_path), columns=200, TETHER_SERVER=server.url, TETHER_TOKEN=owner_token)
    assert "┃" in wide.stdout and LONG_DIR in wide.stdout  # room enough for the table
