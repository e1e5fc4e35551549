"""`tether admin` against a running server's data directory.

The contract a script relies on (stdout of ``token create``, ``login-link``, the password prompt
without a terminal) is checked on real subprocesses; the rest runs the same Typer app in-process
with ``CliRunner`` (each subprocess pays ~1 s of imports).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from tests.support.api import admin_cli, assert_error, bearer, password_login, web_login
from tests.support.server import ROOT, ServerProcess
from typer.testing import CliRunner, Result

from tether.cli import main


def admin(server: ServerProcess, *args: str, stdin: str | None = None,
          data_dir: bool = True) -> subprocess.CompletedProcess[str]:
    """``tether admin ARGS --data-dir <server's>``; no terminal, so prompts read stdin."""
    env = {**os.environ, "TETHER_HOME": str(server.data_dir / "home"), "COLUMNS": "200", "NO_COLOR": "1",
           "TERM": "dumb"}
    env.pop("TETHER_CONFIG_JSON", None)
    extra = ("--data-dir", str(server.data_dir)) if data_dir else ()
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "admin", *args, *extra],
        input=stdin if stdin is not None else "", capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
        start_new_session=True,  # no controlling terminal: getpass falls back to stdin
    )


def admin_fast(server: ServerProcess, *args: str, stdin: str | None = None) -> Result:
    """The same command in-process (``result.stdout`` / ``result.stderr`` / ``result.exit_code``)."""
    result: Result = admin_cli(server.data_dir, *args, stdin=stdin)
    return result


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=15) as c:
        yield c


HELP_COMMANDS = [[], ["token"], ["token", "create"], ["login-link"], ["users"], ["set-password"], ["policy"],
                 ["rotate-keys"], ["keys"], ["retire-key"]]


@pytest.mark.parametrize("command", HELP_COMMANDS)
def test_help(command: list[str]) -> None:
    """In-process (fast); the subprocess test below checks the real entry point once."""
    runner = CliRunner()
    env = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    out = runner.invoke(main.app, ["admin", *command, "--help"], env=env)
    assert out.exit_code == 0, out.output
    assert "Usage:" in out.output
    if command:
        assert command[-1] in out.output
    if command and command[0] != "token":
        assert "--data-dir" in out.output
    assert runner.invoke(main.app, ["admin", *command, "-h"], env=env).output == out.output


def test_help_subprocess(server: ServerProcess) -> None:
    out = admin(server, "--help", data_dir=False)
    assert out.returncode == 0 and "Usage:" in out.stdout and "login-link" in out.stdout, out.stderr


def test_token_create_prints_only_a_token(server: ServerProcess, client: httpx.Client) -> None:
    out = admin(server, "token", "create")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(r"tpt_[A-Za-z0-9_-]{40,}\n", out.stdout), repr(out.stdout)
    assert out.stderr == ""
    token = out.stdout.strip()
    me = client.get("/v1/me", headers=bearer(token)).json()
    assert me["role"] == "owner" and me["user"]["email"] == "owner@localhost" and me["credential"] == "personal"
    second = admin_fast(server, "token", "create").stdout.strip()
    assert second != token and client.get("/v1/me", headers=bearer(second)).status_code == 200
    # it shows up in the owner's audit log
    audit = client.get("/v1/audit", headers=bearer(token)).json()["data"]
    assert [e for e in audit if e["action"] == "token.create" and e["actor"] == "admin"]


def test_token_create_for_a_new_org_and_user(server: ServerProcess, client: httpx.Client) -> None:
    out = admin_fast(server, "token", "create", "--org", "cli-org", "--user", "watcher@cli", "--role", "viewer",
                     "--name", "ci")
    assert out.exit_code == 0, out.output
    token = out.stdout.strip()
    me = client.get("/v1/me", headers=bearer(token)).json()
    assert me["role"] == "viewer" and me["user"]["email"] == "watcher@cli"
    assert me["organization"]["name"] == "cli-org"
    assert [t["name"] for t in client.get("/v1/tokens", headers=bearer(token)).json()["data"]] == ["ci"]


@pytest.mark.parametrize("args", [
    ["--role", "admin"],
    ["--org", "somewhere-else", "--user", "owner@localhost"],  # that user belongs to the default org
])
def test_token_create_refuses_bad_input(server: ServerProcess, args: list[str]) -> None:
    out = admin_fast(server, "token", "create", *args)
    assert out.exit_code != 0
    assert out.exception is None or isinstance(out.exception, SystemExit), out.exception  # no crash
    assert out.stdout == ""  # nothing a script could mistake for a token
    assert "Error" in out.stderr, out.stderr


def test_token_create_refusal_in_a_real_process(server: ServerProcess) -> None:
    out = admin(server, "token", "create", "--org", "elsewhere", "--user", "owner@localhost")
    assert out.returncode == 2 and out.stdout == ""
    assert "Traceback" not in out.stderr and "belongs to another organisation" in out.stderr, out.stderr


def test_users_json(server: ServerProcess) -> None:
    assert admin_fast(server, "token", "create", "--user", "member@localhost", "--role", "member").exit_code == 0
    out = admin_fast(server, "users", "--json")
    assert out.exit_code == 0, out.output
    rows = json.loads(out.stdout)
    assert isinstance(rows, list) and all(set(r) == {"email", "role", "org", "id"} for r in rows)
    by_email = {r["email"]: r for r in rows}
    assert by_email["owner@localhost"]["role"] == "owner" and by_email["owner@localhost"]["org"] == "default"
    assert by_email["member@localhost"]["role"] == "member"
    assert all(r["id"].startswith("user_") for r in rows)
    plain = admin_fast(server, "users")
    assert plain.exit_code == 0
    lines = plain.stdout.splitlines()
    assert len(lines) == len(rows)
    assert any(line.split() == ["owner@localhost", "owner", "default"] for line in lines)


def test_policy(server: ServerProcess, client: httpx.Client) -> None:
    owner_token = admin_fast(server, "token", "create").stdout.strip()
    token = admin_fast(server, "token", "create", "--org", "policy-org", "--user", "boss@policy").stdout.strip()
    h = bearer(token)

    def show(*args: str) -> str:
        out = admin_fast(server, "policy", "--org", "policy-org", *args)
        assert out.exit_code == 0, out.output
        return out.stdout.strip()

    assert show() == "allow_remote_control: on"
    assert show("--deny-remote-control") == "allow_remote_control: off"
    assert show() == "allow_remote_control: off"
    assert client.get("/v1/me", headers=h).json()["policy"]["allow_remote_control"] is False
    assert_error(client.post("/v1/sessions", json={}, headers=h), 403, "policy_denied")
    # the default org was never touched
    assert client.get("/v1/me", headers=bearer(owner_token)).json()["policy"]["allow_remote_control"] is True
    assert admin_fast(server, "policy").stdout.strip() == "allow_remote_control: on"
    assert show("--allow-remote-control") == "allow_remote_control: on"
    assert client.post("/v1/sessions", json={}, headers=h).status_code == 200

    missing = admin_fast(server, "policy", "--org", "no-such-org")
    assert missing.exit_code != 0 and "no-such-org" in missing.stderr and missing.stdout == ""


def test_login_link(server: ServerProcess) -> None:
    out = admin(server, "login-link", "--port", str(server.port))
    assert out.returncode == 0, out.stderr
    link = out.stdout.strip()
    assert out.stdout.count("\n") == 1
    assert re.fullmatch(rf"http://127\.0\.0\.1:{server.port}/login\?token=tll_[A-Za-z0-9_-]+", link), link
    with httpx.Client(base_url=server.url, timeout=15) as browser, \
            httpx.Client(base_url=server.url, timeout=15) as late:
        web_login(browser, link)
        assert browser.get("/v1/me").json()["user"]["email"] == "owner@localhost"
        assert late.get(link.removeprefix(server.url)).status_code == 401  # one-time

    assert admin_fast(server, "token", "create", "--user", "linked@localhost", "--role", "member").exit_code == 0
    link = admin_fast(server, "login-link", "--port", str(server.port), "--user", "linked@localhost").stdout.strip()
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        web_login(browser, link)
        me = browser.get("/v1/me").json()
        assert me["user"]["email"] == "linked@localhost" and me["role"] == "member"

    public = admin_fast(server, "login-link", "--public-url", "https://tether.example/")
    assert public.exit_code == 0 and public.stdout.startswith("https://tether.example/login?token=tll_")
    unknown = admin_fast(server, "login-link", "--user", "nobody@localhost")
    assert unknown.exit_code != 0 and unknown.stdout == "" and "nobody@localhost" in unknown.stderr


def _login(server: ServerProcess, password: str) -> int:
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        return password_login(browser, "owner@localhost", password).status_code


def test_set_password(server: ServerProcess) -> None:
    out = admin(server, "set-password", "owner@localhost", "--password", "first secret")
    assert out.returncode == 0 and out.stdout.strip() == "Password set for owner@localhost.", out.stderr
    assert _login(server, "first secret") == 303

    # without --password it prompts twice (hidden + confirmation); with no terminal it reads stdin
    prompted = admin(server, "set-password", "owner@localhost", stdin="second secret\nsecond secret\n")
    assert prompted.returncode == 0, prompted.stderr
    assert "Password set for owner@localhost." in prompted.stdout
    assert _login(server, "second secret") == 303
    assert _login(server, "first secret") == 401


def test_set_password_refusals(server: ServerProcess) -> None:
    admin_fast(server, "set-password", "owner@localhost", "--password", "kept")
    # a mismatched confirmation, then end of input: aborted, nothing changed
    mismatch = admin_fast(server, "set-password", "owner@localhost", stdin="third\nfourth\n")
    assert mismatch.exit_code != 0 and "Password set" not in mismatch.stdout
    assert "do not match" in mismatch.output
    assert _login(server, "kept") == 303

    unknown = admin_fast(server, "set-password", "nobody@localhost", "--password", "x")
    assert unknown.exit_code != 0 and "nobody@localhost" in unknown.stderr


def test_keys_lists_ids_never_secrets_and_retiring_the_active_or_an_unknown_key_is_refused(
        server: ServerProcess) -> None:
    listed = admin_fast(server, "keys", "--json")
    assert listed.exit_code == 0, listed.output
    keys = json.loads(listed.stdout)
    assert keys and set(keys[0]) == {"kid", "active", "created_at"}  # no secret
    active = [k["kid"] for k in keys if k["active"]]
    assert len(active) == 1
    refused = admin_fast(server, "retire-key", active[0])
    assert refused.exit_code == 2 and "rotate-keys` first" in refused.output
    unknown = admin_fast(server, "retire-key", "k-nobody")
    assert unknown.exit_code == 2 and "No signing key 'k-nobody'" in unknown.output
    assert json.loads(admin_fast(server, "keys", "--json").stdout) == keys  # nothing changed

