"""The chaos soak's short variant (bench/chaos.py --quick) on fixed seeds: real servers, bridges,
agents and clients under network and process faults; nothing acknowledged may be lost or
duplicated, and every acknowledged prompt must run to a result.

Fixed seeds make a red run reproducible (the random soak stays in bench/chaos.py for humans).
The two runs go side by side, each with one share of the process faults; together they inject
every kind, and each waits for its first round of process faults however slow the machine is."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

RUNS = {
    # CI's first red run: a v1 turn cut by a bridge SIGKILL was never run again (the echo had marked
    # its prompt processed); with server kills too, on both transports. (Its later intermittent red,
    # one prompt "never ran to a result", was the driver's: a prompt whose POST was still under way
    # when the prompts stopped was acknowledged after the quiet phase had taken its list.)
    506147849: ("--only", "SIGKILL"),
    # v2 epoch takeovers and worker tokens expiring mid-turn (v1 and v2)
    7: ("--only", "takeover", "--only", "token"),
}
KINDS = ("server SIGKILL + restart (v1)", "server SIGKILL + restart (v2)", "bridge SIGKILL + --continue (v1)",
         "bridge SIGKILL + --continue (v2)", "v2 epoch takeover (v2)", "worker token expiry mid-turn (v1)",
         "worker token expiry mid-turn (v2)", "net reset", "net close", "net stall", "net half_close")


@pytest.mark.timeout(400)
def test_chaos_quick_on_fixed_seeds_loses_duplicates_and_drops_nothing() -> None:
    env = {**os.environ, "COLUMNS": "160"}
    runs = {seed: subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "chaos.py"), "--quick", "--seed", str(seed), "--faults", "60",
         "--duration", "30", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env)
        for seed, args in RUNS.items()}
    outputs = {seed: proc.communicate(timeout=380)[0] for seed, proc in runs.items()}
    for seed, text in outputs.items():
        assert runs[seed].returncode == 0, f"seed {seed}: exit {runs[seed].returncode}\n{text[-6000:]}"
        verdict = re.search(r"chaos soak OK: ([\d,]+) faults, ([\d,]+) events acknowledged, 0 lost, "
                            r"0 duplicated, 0 gaps", text)
        assert verdict is not None, f"seed {seed}:\n{text[-4000:]}"
        assert int(verdict.group(2).replace(",", "")) > 0, f"seed {seed}: nothing acknowledged\n{text[-4000:]}"
    together = "\n".join(outputs.values())  # (how many faults fire depends on the traffic: kinds are checked)
    for kind in KINDS:
        assert kind in together, f"no {kind!r} fault was injected:\n{together[-6000:]}"
