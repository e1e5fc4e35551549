"""`tether server --check`: the database reachable and migrated, Redis reachable; exit 0 / 1; --json."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import subprocess
import sys

from tests.support.server import ROOT, free_port
from tests.support.services import RedisProcess
from typer.testing import CliRunner, Result

from tether.cli import main
from tether.server.preflight import head_revision
from tether.server.store import Store

ENV = {"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}


def check(*args: str) -> Result:
    return CliRunner().invoke(main.app, ["server", "--check", *args], env=ENV)


def report(result: Result) -> dict[str, object]:
    data: dict[str, object] = json.loads(result.stdout)
    return data


def _migrate(url: str) -> None:
    async def migrate() -> None:
        store = Store(url)
        await store.open()
        await store.close()

    asyncio.run(migrate())


def test_fresh_sqlite_is_reachable_but_not_migrated(tmp_path: pathlib.Path) -> None:
    result = check("--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 1, result.output
    checks = report(result)["checks"]
    assert isinstance(checks, list)
    assert [(c["name"], c["ok"]) for c in checks] == [("database", True), ("migrations", False)]
    assert "start `tether server` once" in checks[1]["detail"]


def test_migrated_postgres_and_live_redis_pass(postgres_url: str, shared_redis_url: str) -> None:
    _migrate(postgres_url)
    password_url = postgres_url.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    result = check("--database-url", password_url, "--redis-url", shared_redis_url, "--json")
    assert result.exit_code == 0, result.output
    data = report(result)
    assert data["ok"] is True
    checks = data["checks"]
    assert isinstance(checks, list)
    assert [c["name"] for c in checks] == ["database", "migrations", "redis"]
    assert checks[1]["detail"] == f"at head ({head_revision()})"
    assert checks[2]["detail"] == "PONG"
    assert "s3cret" not in result.stdout and "postgres:***@" in result.stdout


def test_unreachable_services_fail_with_the_reason(tmp_path: pathlib.Path) -> None:
    dead = free_port()
    result = check("--database-url", f"postgresql+asyncpg://postgres@127.0.0.1:{dead}/tether",
                   "--redis-url", f"redis://127.0.0.1:{dead}/0")
    assert result.exit_code == 1
    assert "cannot connect" in result.stdout and "no answer to PING" in result.stdout
    assert "A check failed." in result.stdout


def test_a_stopped_redis_fails_the_check_and_a_started_one_passes(tmp_path: pathlib.Path) -> None:
    redis = RedisProcess(tmp_path / "redis").start()
    try:
        assert check("--data-dir", str(tmp_path), "--redis-url", redis.url, "--json").exit_code == 1  # no schema
        ok = report(check("--data-dir", str(tmp_path), "--redis-url", redis.url, "--json"))["checks"]
        assert isinstance(ok, list) and ok[-1]["ok"] is True
        redis.stop()
        down = report(check("--data-dir", str(tmp_path), "--redis-url", redis.url, "--json"))["checks"]
        assert isinstance(down, list) and down[-1]["ok"] is False and "ConnectionError" in down[-1]["detail"]
    finally:
        redis.stop()


def test_bad_flags_are_usage_errors(tmp_path: pathlib.Path) -> None:
    bad = CliRunner().invoke(main.app, ["server", "--check", "--redis-url", "localhost:6379"], env=ENV)
    assert bad.exit_code == 2 and "not a Redis URL" in bad.output
    stray = CliRunner().invoke(main.app, ["server", "--json", "--data-dir", str(tmp_path)], env=ENV)
    assert stray.exit_code == 2 and "--json goes with --check" in stray.output


def test_check_through_the_real_entry_point(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, **ENV, "TETHER_HOME": str(tmp_path / "home")}
    env.pop("TETHER_CONFIG_JSON", None)
    out = subprocess.run([sys.executable, "-m", "tether.cli.main", "server", "--check", "--data-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert out.returncode == 1, out.stderr
    assert "migrations" in out.stdout and "FAIL" in out.stdout and "not configured" in out.stdout
