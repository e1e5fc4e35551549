"""`tether server` as a process others can find: the runtime file, one server per data
directory, `--detach`, `status`, `stop`, and `tether admin login-link` on the running port."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from tests.support.api import admin_cli, bearer, create_session, mint_token, register_environment
from tests.support.server import ROOT, ServerProcess, free_port

from tether.server import runtime

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def tether(*args: str, home: pathlib.Path, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    env.update(TETHER_HOME=str(home), COLUMNS="200", NO_COLOR="1", TERM="dumb", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, stdin=subprocess.DEVNULL)


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_running_server_records_where_it_listens_and_owns_its_data_dir(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    try:
        assert server.proc is not None
        info = runtime.running_server(data)
        assert info is not None and info.pid == server.proc.pid and info.url == server.url
        assert info.port == server.port and not info.detached
        second = tether("server", "--port", str(free_port()), "--data-dir", str(data), home=tmp_path / "home")
        assert second.returncode == 1
        assert f"Another Tether server (pid {server.proc.pid}, {server.url}) is running from {data}" in second.stderr
        assert "tether server stop" in second.stderr and "Traceback" not in second.stderr
        # item 6: the link names the port the server listens on, without --port
        link = admin_cli(data, "login-link")
        assert link.exit_code == 0 and link.stdout.startswith(f"{server.url}/login?token=tll_"), link.output
        public = admin_cli(data, "login-link", "--public-url", "https://tether.example")
        assert public.stdout.startswith("https://tether.example/login?token=")
    finally:
        server.stop()
    assert runtime.read_runtime(data) is None, "a clean stop removes the runtime file"
    assert not runtime.lock_held(data)


def test_a_killed_server_leaves_a_stale_file_that_nobody_trusts(tmp_path: pathlib.Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(data).start()
    server.kill()
    assert runtime.read_runtime(data) is not None and runtime.running_server(data) is None
    status = tether("server", "status", "--data-dir", str(data), home=tmp_path / "home")
    assert status.returncode == 1 and "No Tether server is running" in status.stdout and "stale" in status.stdout
    server.start()  # the kernel dropped the lock with the process: a new server starts
    try:
        assert server.proc is not None and runtime.running_server(data).pid == server.proc.pid  # type: ignore[union-attr]
    finally:
        server.stop()


def test_detach_status_and_stop(tmp_path: pathlib.Path) -> None:
    data, home, port = tmp_path / "data", tmp_path / "home", free_port()
    started = tether("server", "--detach", "--port", str(port), "--data-dir", str(data), home=home)
    assert started.returncode == 0, started.stderr
    url = f"http://127.0.0.1:{port}"
    assert f"running in the background at {url}" in started.stdout
    assert f"Log in: {url}/login?token=tll_" in started.stdout and "tether server stop" in started.stdout
    info = runtime.running_server(data)
    try:
        assert info is not None and info.detached and info.log_file == str(data.resolve() / "server.log")
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        again = tether("server", "--detach", "--port", str(port), "--data-dir", str(data), home=home)
        assert again.returncode == 0 and f"already runs from {data}: {url} (pid {info.pid})" in again.stdout
        other_port = tether("server", "--detach", "--port", str(free_port()), "--data-dir", str(data), home=home)
        assert other_port.returncode == 1 and "Stop it first" in other_port.stderr

        token = mint_token(data)
        client = httpx.Client(base_url=url, timeout=10)
        env_id, secret = register_environment(client, token, machine_name="laptop", directory="/work/a")
        create_session(client, token, env_id)  # queued work: a poll with reclaim 1 ms answers at once

        def polled() -> None:
            """A bridge is online while it polls (last poll < 16 s): poll now, so a slow machine
            running the CLI commands below does not see it fall offline between them."""
            r = client.get(f"/v1/environments/{env_id}/work/poll", params={"reclaim_older_than_ms": 1},
                           headers=bearer(secret))
            assert r.status_code == 200 and r.json() is not None, r.text

        polled()
        status = tether("server", "status", "--json", "--data-dir", str(data), home=home)
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["running"] and report["ready"] and report["pid"] == info.pid and report["url"] == url
        assert [(b["machine_name"], b["directory"]) for b in report["bridges_online"]] == [("laptop", "/work/a")]
        polled()
        text = tether("server", "status", "--data-dir", str(data), home=home)
        assert "in the background" in text.stdout and "1 bridge (laptop:/work/a) online" in text.stdout

        polled()
        stopped = tether("server", "stop", "--data-dir", str(data), home=home)
        client.close()
        assert stopped.returncode == 0, stopped.stderr
        assert "1 bridge (laptop:/work/a) uses this server; stopping it disconnects it" in stopped.stderr
        assert f"Stopped the Tether server at {url} (pid {info.pid})" in stopped.stdout
        assert not listening(port) and runtime.read_runtime(data) is None
        after = tether("server", "status", "--data-dir", str(data), home=home)
        assert after.returncode == 1 and "No Tether server is running" in after.stdout
        assert tether("server", "stop", "--data-dir", str(data), home=home).returncode == 0
    finally:
        if info is not None and runtime.lock_held(data):
            os.kill(info.pid, signal.SIGKILL)


@pytest.mark.parametrize("command", [("server",), ("server", "--detach"), ("up",)])
def test_a_data_dir_that_cannot_be_created_is_a_usage_error(tmp_path: pathlib.Path, command: tuple[str, ...]) -> None:
    """Not a traceback from deep in the start-up: exit status 2 and which path and why."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    out = tether(*command, "--data-dir", str(blocker / "data"), "--port", str(free_port()), home=tmp_path / "home")
    assert out.returncode == 2, out.stderr
    assert f"Invalid value for --data-dir: cannot create {blocker / 'data'}: Not a directory" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_port_something_else_listens_on_is_refused_before_anything_starts(tmp_path: pathlib.Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        out = tether("server", "--data-dir", str(tmp_path / "data"), "--port", str(port), home=tmp_path / "home")
    assert out.returncode == 1, out.stderr
    assert f"Port {port} is already in use. Pass --port, or stop what listens there." in out.stderr
    assert "alembic" not in out.stderr and "Log in:" not in out.stdout  # nothing was migrated or minted
    assert runtime.read_runtime(tmp_path / "data") is None


def test_detach_behind_a_proxy_is_ready_on_loopback(tmp_path: pathlib.Path) -> None:
    """--public-url names the TLS proxy in front (here a name that does not even resolve): the
    server is probed on loopback, so --detach and status see it ready."""
    port, data = free_port(), tmp_path / "data"
    public = f"https://tether.invalid:{port}"
    started = tether("server", "--detach", "--data-dir", str(data), "--port", str(port), "--public-url", public,
                     home=tmp_path / "home")
    try:
        assert started.returncode == 0, started.stderr
        assert f"running in the background at {public}" in started.stdout
        status = tether("server", "status", "--json", "--data-dir", str(data), home=tmp_path / "home")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["ready"] is True and report["url"] == public
    finally:
        tether("server", "stop", "--data-dir", str(data), home=tmp_path / "home")


def test_detach_beyond_loopback_without_tls_warns_in_the_terminal(tmp_path: pathlib.Path) -> None:
    """The detached child's own warning lands in server.log, which nobody reads at start: the
    command that detaches says it where the user is looking."""
    data, home = tmp_path / "data", tmp_path / "home"
    started = tether("server", "--detach", "--host", "0.0.0.0", "--port", str(free_port()), "--data-dir", str(data),
                     home=home)
    try:
        assert started.returncode == 0, started.stderr
        assert "warning: binding beyond loopback without TLS" in started.stderr
        assert "--public-url" in started.stderr
    finally:
        assert tether("server", "stop", "--data-dir", str(data), home=home).returncode == 0
    assert not runtime.lock_held(data)
