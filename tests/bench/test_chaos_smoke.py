"""The chaos soak's short variant (bench/chaos.py --quick): real servers, bridges, agents and clients
under network and process faults; nothing acknowledged may be lost or duplicated."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_chaos_quick_loses_and_duplicates_nothing() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick"],
                         capture_output=True, text=True, timeout=280, cwd=ROOT, env={**os.environ, "COLUMNS": "160"})
    text = out.stdout + out.stderr
    assert out.returncode == 0, f"exit {out.returncode}\n{text[-6000:]}"
    verdict = re.search(r"chaos soak OK: ([\d,]+) faults, ([\d,]+) events acknowledged, 0 lost, 0 duplicated, "
                        r"0 gaps", text)
    assert verdict is not None, text[-4000:]
    faults, acknowledged = (int(g.replace(",", "")) for g in verdict.groups())
    assert faults >= 100 and acknowledged > 0, text[-4000:]
    for kind in ("server SIGKILL + restart", "v2 epoch takeover", "bridge SIGKILL + --continue",
                 "worker token expiry mid-turn", "net reset", "net stall"):
        assert kind in text, f"no {kind!r} fault was injected:\n{text[-4000:]}"
