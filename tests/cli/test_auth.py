"""`tether login` / `logout` / `status` as real subprocesses against a real `tether server`,
each with its own TETHER_HOME. The device flow is approved from the test through the web
client's /device form, like a person in a browser would."""

from __future__ import annotations

import json
import os
import pathlib
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from tests.support.api import DEVICE_FLOW_LIMITS, approve_device, bearer, logged_in_web
from tests.support.server import ROOT, ServerProcess, free_port
from typer.testing import CliRunner

from tether.cli.main import app

CODE = re.compile(r"\b([B-Z]{4}-[B-Z]{4})\b")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("cli-auth"), limits=DEVICE_FLOW_LIMITS) as proc:
        yield proc


@pytest.fixture(scope="module")
def web(server: ServerProcess) -> Iterator[httpx.Client]:
    with logged_in_web(server) as c:
        yield c


def cli_env(home: pathlib.Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_TOKEN", "TETHER_SERVER")}
    env.update(TETHER_HOME=str(home), PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
    env.update(extra)
    return env


def run_cli(home: pathlib.Path, *args: str, stdin: str = "", **extra: str) -> subprocess.CompletedProcess[str]:
    """The real `tether` in a subprocess."""
    return subprocess.run([sys.executable, "-m", "tether.cli.main", *args], input=stdin, capture_output=True,
                          text=True, env=cli_env(home, **extra), cwd=ROOT, timeout=60)


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def invoke(home: pathlib.Path, *args: str, stdin: str = "", **extra: str) -> Ran:
    """The same command line in this process (much faster than a subprocess; same exit codes)."""
    env: dict[str, str | None] = {"TETHER_TOKEN": None, "TETHER_SERVER": None, "TETHER_HOME": str(home),
                                  "COLUMNS": "200", "NO_COLOR": "1"}
    env.update(extra)
    result = CliRunner().invoke(app, list(args), input=stdin, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Ran(result.exit_code, result.stdout, result.stderr)


@dataclass
class LoginProcess:
    """`tether login` running in the background; its stdout lines arrive on a queue."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]
    seen: list[str]

    @classmethod
    def start(cls, home: pathlib.Path, *args: str) -> LoginProcess:
        proc = subprocess.Popen([sys.executable, "-m", "tether.cli.main", "login", *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(home),
                                cwd=ROOT)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            with proc.stdout:  # closed at EOF: nothing left for the garbage collector
                for line in proc.stdout:
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        return cls(proc, lines, [])

    def user_code(self, timeout: float = 30.0) -> str:
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                raise AssertionError(f"login exited before printing a code: {self.seen} {self.stderr()}")
            self.seen.append(line)
            if match := CODE.search(line):
                return match.group(1)

    def finish(self, timeout: float = 45.0) -> tuple[int, str, str]:
        code = self.proc.wait(timeout)
        while (line := self.lines.get(timeout=5)) is not None:
            self.seen.append(line)
        return code, "".join(self.seen), self.stderr()

    def stderr(self) -> str:
        assert self.proc.stderr is not None
        if self.proc.poll() is None or self.proc.stderr.closed:
            return ""
        with self.proc.stderr:  # read once, at exit; closed so nothing is left for the garbage collector
            return self.proc.stderr.read()


def stored(home: pathlib.Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((home / "credentials.json").read_text())
    return data


def test_device_login_status_logout(server: ServerProcess, web: httpx.Client, tmp_path: pathlib.Path) -> None:
    home = tmp_path / "home"
    login = LoginProcess.start(home, "--server", server.url)
    code = login.user_code()
    assert approve_device(web, code).status_code == 200
    rc, out, err = login.finish()
    assert rc == 0, (out, err)
    assert f"{server.url}/device" in out and f"/device?user_code={code}" in out  # printed, never opened
    assert "Logged in" in out and "owner@localhost" in out

    path = home / "credentials.json"
    assert (path.stat().st_mode & 0o777) == 0o600
    data = stored(home)
    assert data["server"] == server.url and data["kind"] == "oauth" and data["role"] == "owner"
    assert str(data["access_token"]).startswith("tat_") and str(data["refresh_token"]).startswith("trt_")
    assert isinstance(data["expires_at"], float)

    status = run_cli(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["logged_in"] and report["server"] == server.url and report["role"] == "owner"
    assert report["user"]["email"] == "owner@localhost" and report["organization"]["name"] == "default"
    assert report["credential"] == {"kind": "oauth", "source": "file", "stored_in": str(path),
                                    "expires_at": data["expires_at"], "refreshable": True}
    assert isinstance(report["environments"], list)

    # an environment shows up with its online state and sessions
    access = str(data["access_token"])
    resp = httpx.post(f"{server.url}/v1/environments/bridge", headers=bearer(access), json={
        "machine_name": "cli-test-host", "directory": "/srv/proj", "branch": "main", "max_sessions": 3,
        "metadata": {"worker_type": "claude_code"}})
    assert resp.status_code == 200, resp.text
    human = invoke(home, "status")
    assert human.returncode == 0, human.stderr
    assert "owner@localhost" in human.stdout and server.url in human.stdout and "cli-test-host" in human.stdout
    assert "online" in human.stdout and "0/3" in human.stdout
    env_id = resp.json()["environment_id"]
    listed = {e["id"]: e for e in json.loads(invoke(home, "status", "--json").stdout)["environments"]}
    assert listed[env_id]["online"] is True and listed[env_id]["active_sessions"] == 0
    assert httpx.delete(f"{server.url}/v1/environments/bridge/{env_id}", headers=bearer(access)).status_code == 200
    retired = invoke(home, "status")
    assert retired.returncode == 0 and "cli-test-host" not in retired.stdout and "1 deregistered" in retired.stdout

    out_ = invoke(home, "logout")
    assert out_.returncode == 0 and "Logged out" in out_.stdout, out_.stderr
    assert not path.exists()
    # the server revoked the login: neither token works any more
    assert httpx.get(f"{server.url}/v1/me", headers=bearer(access)).status_code == 401
    gone = httpx.post(f"{server.url}/oauth/token",
                      data={"grant_type": "refresh_token", "refresh_token": str(data["refresh_token"])})
    assert gone.status_code == 400 and gone.json()["error"]["type"] == "invalid_grant"

    after = invoke(home, "status")
    assert after.returncode == 1 and "Not logged in" in after.stderr and "tether login" in after.stderr
    again = invoke(home, "logout")
    assert again.returncode == 0 and "Not logged in" in again.stdout


def test_device_login_denied(server: ServerProcess, web: httpx.Client, tmp_path: pathlib.Path) -> None:
    login = LoginProcess.start(tmp_path, "--server", server.url)
    assert approve_device(web, login.user_code(), action="deny").status_code == 200
    rc, out, err = login.finish()
    assert rc == 1 and "denied" in err, (out, err)
    assert not (tmp_path / "credentials.json").exists()


def test_device_login_expired(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "short", device_code_ttl_s=2.0,
                       limits={"rate_per_second": 0, "device_poll_interval_s": 1}) as short:
        login = LoginProcess.start(tmp_path / "home", "--server", short.url)
        login.user_code()
        rc, out, err = login.finish()
    assert rc == 1 and "expired" in err and "tether login" in err, (out, err)
    assert not (tmp_path / "home" / "credentials.json").exists()


def test_login_with_token(server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    done = invoke(tmp_path, "login", "--with-token", "--server", server.url, stdin=f"{owner_token}\n")
    assert done.returncode == 0, done.stderr
    assert "owner@localhost" in done.stdout
    data = stored(tmp_path)
    assert data["kind"] == "personal" and data["access_token"] == owner_token and data["refresh_token"] is None
    assert ((tmp_path / "credentials.json").stat().st_mode & 0o777) == 0o600

    report = json.loads(invoke(tmp_path, "status", "--json").stdout)
    assert report["credential"]["kind"] == "personal" and report["credential"]["refreshable"] is False

    # a token the server does not accept is refused and changes nothing
    bad = invoke(tmp_path, "login", "--with-token", "--server", server.url, stdin="tpt_not-a-token\n")
    assert bad.returncode == 1 and "did not accept" in bad.stderr
    assert stored(tmp_path)["access_token"] == owner_token
    empty = invoke(tmp_path, "login", "--with-token", "--server", server.url, stdin="")
    assert empty.returncode == 2 and "No token" in empty.stderr

    # logout forgets a personal token without revoking it (it may be used elsewhere)
    out = invoke(tmp_path, "logout")
    assert out.returncode == 0 and "not revoked" in out.stderr
    assert not (tmp_path / "credentials.json").exists()
    assert httpx.get(f"{server.url}/v1/me", headers=bearer(owner_token)).status_code == 200


def test_environment_overrides(server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    report = invoke(tmp_path, "status", "--json", TETHER_TOKEN=owner_token, TETHER_SERVER=server.url)
    assert report.returncode == 0, report.stderr
    data = json.loads(report.stdout)
    assert data["server"] == server.url
    assert data["credential"]["source"] == "env" and data["credential"]["stored_in"] == "TETHER_TOKEN"
    assert not (tmp_path / "credentials.json").exists()  # never written

    # a stored login is only used for its own server
    assert invoke(tmp_path, "login", "--with-token", "--server", server.url, stdin=owner_token).returncode == 0
    elsewhere = f"http://127.0.0.1:{free_port()}"
    other = invoke(tmp_path, "status", TETHER_SERVER=elsewhere)
    assert other.returncode == 1 and f"Not logged in to {elsewhere}" in other.stderr
    assert invoke(tmp_path, "status", TETHER_SERVER=server.url).returncode == 0

    wrong = invoke(tmp_path, "status", "--json", TETHER_TOKEN="tpt_wrong", TETHER_SERVER=server.url)
    assert wrong.returncode == 1
    assert json.loads(wrong.stdout)["error"]["type"] == "login_invalid"


def test_status_unreachable_and_not_logged_in(tmp_path: pathlib.Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    empty = invoke(tmp_path / "empty", "status", "--json", "--server", dead)
    assert empty.returncode == 1
    assert json.loads(empty.stdout) == {"server": dead, "logged_in": False, "error": {
        "type": "not_logged_in", "message": json.loads(empty.stdout)["error"]["message"]}}

    home = tmp_path / "home"
    home.mkdir()
    (home / "credentials.json").write_text(json.dumps({"server": dead, "access_token": "tpt_x", "kind": "personal"}))
    human = invoke(home, "status")
    assert human.returncode == 1
    assert "Cannot reach" in human.stderr and "tether server" in human.stderr and "--server" in human.stderr
    as_json = json.loads(invoke(home, "status", "--json").stdout)
    assert as_json["logged_in"] is False and as_json["error"]["type"] == "unreachable"

    down = invoke(home, "login", "--server", dead)
    assert down.returncode == 1 and "Cannot reach" in down.stderr

    (home / "credentials.json").write_text("{broken")
    broken = invoke(home, "status")
    assert broken.returncode == 1 and "tether login" in broken.stderr
