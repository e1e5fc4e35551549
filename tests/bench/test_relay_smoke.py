"""Smoke test: the relay benchmark runs end to end and prints its table (no speed assertions)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(180)
def test_relay_bench_quick_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "relay.py"), "--quick"],
        capture_output=True, text=True, timeout=170, cwd=ROOT,
    )
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    header = next((line for line in out.stdout.splitlines() if "scenario" in line), "")
    for column in ("scenario", "metric", "tether", "baseline", "ratio", "target", "ok?"):
        assert column in header, f"missing column {column!r} in the table header:\n{out.stdout[-3000:]}"
