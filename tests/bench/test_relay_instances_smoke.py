"""Smoke test: ``bench/relay.py --quick --instances 1,2`` runs end to end on the loopback PostgreSQL
and Redis and prints one row per instance count beside the SQLite baseline, every figure a sane
number (no speed assertions: the machine's load decides those)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest
from tests.support.services import service_urls

ROOT = pathlib.Path(__file__).resolve().parents[2]
NUMBER = r"[\d,]+(?:\.\d+)?"


def services_or_skip() -> dict[str, str]:
    try:
        return service_urls()
    except (OSError, subprocess.SubprocessError) as exc:  # not installed here: scripts/install-test-deps
        pytest.skip(f"PostgreSQL/Redis not available ({exc})")


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The table's body rows by their first cell (rich draws cells apart with │)."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.lstrip().startswith("│") and len(cells) == 7:
            rows[cells[0]] = cells[1:]
    return rows


def numbers(cell: str) -> list[float]:
    return [float(n.replace(",", "")) for n in re.findall(NUMBER, cell)]


@pytest.mark.timeout(300)
def test_relay_bench_instances_quick_prints_a_row_per_count() -> None:
    urls = services_or_skip()
    env = {**os.environ, **urls, "COLUMNS": "160"}
    env.pop("TETHER_TEST_STORE", None)  # the baseline row is SQLite's, whatever store the suite runs on
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--quick", "--raw-http", "--instances", "1,2"],
        capture_output=True, text=True, timeout=290, cwd=ROOT, env=env,
    )
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    rows = table_rows(out.stdout)
    assert list(rows) == ["SQLite × 1", "PG+Redis × 1", "PG+Redis × 2"], out.stdout[-4000:]
    for label, (latency, fan, many, instances_cpu, others_cpu, missing) in rows.items():
        instances = 1 if label.endswith("× 1") else 2
        p50, p99 = numbers(latency)
        assert 0 < p50 <= p99, f"{label}: latency {latency!r}"
        fan_events, fan_frames = numbers(fan)
        assert 0 < fan_events <= fan_frames, f"{label}: fan-out {fan!r} (10 subscribers: more frames than events)"
        posts, frames = numbers(many)
        assert posts > 0 and frames > 0, f"{label}: 10×1 {many!r}"
        # CPU per instance for both windows: "a+b | c+d"
        windows = [numbers(part) for part in instances_cpu.split("|")]
        assert [len(w) for w in windows] == [instances, instances], f"{label}: instances' CPU {instances_cpu!r}"
        assert all(share > 0 for w in windows for share in w), f"{label}: instances' CPU {instances_cpu!r}"
        # PG·Redis·client per window: "—" for SQLite's row, a number for the services when they run here
        pg_redis_client = [part.strip().split("·") for part in others_cpu.split("|")]
        assert all(len(w) == 3 for w in pg_redis_client), f"{label}: {others_cpu!r}"
        assert all(re.fullmatch(r"\d+", w[2]) for w in pg_redis_client), f"{label}: client CPU {others_cpu!r}"
        if label.startswith("SQLite"):
            assert all(w[:2] == ["—", "—"] for w in pg_redis_client), f"{label}: {others_cpu!r}"
        else:  # the services of scripts/services run on this machine: their processes are found
            assert all(re.fullmatch(r"\d+", v) for w in pg_redis_client for v in w[:2]), f"{label}: {others_cpu!r}"
        assert missing == "0", f"{label}: {missing} frames never delivered"


def run_relay(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "relay.py"), *args], capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=env)


def test_instances_without_services_says_how_to_start_them() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("TETHER_TEST_POSTGRES_URL", "TETHER_TEST_REDIS_URL")}
    out = run_relay("--instances", "1,2", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--database-url and --redis-url" in out.stderr and "scripts/services start" in out.stderr, out.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("--instances", "1,0"), "whole numbers from 1 to 16, not '0'"),
    (("--instances", ""), "at least one instance count"),
    (("--instances", "2", "--only", "latency"), "--only does not apply to --instances"),
    (("--redis-url", "redis://127.0.0.1:1/0",), "go with --instances"),
    (("--instances", "1", "--database-url", "sqlite:///x.db", "--redis-url", "redis://127.0.0.1:1/0"),
     "must be a postgresql:// URL"),
])
def test_bad_instances_arguments_are_refused_before_anything_starts(args: tuple[str, ...], message: str) -> None:
    out = run_relay(*args, env=dict(os.environ))
    assert out.returncode == 2, out.stdout + out.stderr
    assert message in out.stderr, out.stderr


def test_unreachable_services_are_named_before_any_server_starts() -> None:
    out = run_relay("--instances", "1", "--database-url", "postgresql://postgres@127.0.0.1:1/postgres",
                    "--redis-url", "redis://127.0.0.1:1/0", env=dict(os.environ))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "cannot reach PostgreSQL at postgresql://postgres@127.0.0.1:1/postgres" in out.stdout, out.stdout
    assert "starting" not in out.stdout, out.stdout  # (no server was started)
