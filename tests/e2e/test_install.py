"""scripts/install says what it does (issue #10 item 8: it used to print nothing for ~40 s).

The whole install takes minutes on a fresh machine; what is checked here is that it speaks at
once and names each step and package as pip fetches it — the run is stopped after the first
packages — and that an unchanged install is skipped."""

from __future__ import annotations

import itertools
import os
import pathlib
import shutil
import signal
import subprocess
import time

import pytest

from tests.support.server import ROOT

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def project_copy(tmp_path: pathlib.Path) -> pathlib.Path:
    copy = tmp_path / "tether"
    copy.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    return copy


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONHOME"))}
    env["PYTHON"] = shutil.which("python3") or "python3"
    return env


def test_install_announces_each_step_and_package_as_it_goes(tmp_path: pathlib.Path) -> None:
    copy = project_copy(tmp_path)
    proc = subprocess.Popen(["scripts/install"], cwd=copy, env=clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    started = time.monotonic()
    seen: list[tuple[float, str]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append((time.monotonic() - started, line.rstrip("\n")))
            if line.startswith("    ") and any(t.startswith("==> Installing Tether") for _, t in seen):
                if sum(1 for _, t in seen if t.startswith("    ")) >= 3:
                    break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
    texts = [t for _, t in seen]
    assert texts[0].startswith("==> Creating .venv with Python 3"), texts
    assert seen[0][0] < 15, "the first line comes at once"
    assert "==> Updating pip in .venv" in texts
    assert any(t.startswith("==> Installing Tether and dependencies into .venv") for t in texts), texts
    packages = [t.strip() for t in texts if t.startswith("    ")]
    assert len(packages) >= 3, texts
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(seen)]
    assert max(gaps) < 60, f"a silent stretch of {max(gaps):.0f} s: {seen}"


def test_an_unchanged_install_is_skipped(tmp_path: pathlib.Path) -> None:
    copy = project_copy(tmp_path)
    python = clean_env()["PYTHON"]
    subprocess.run([python, "-m", "venv", "--without-pip", str(copy / ".venv")], check=True, timeout=120)
    version = subprocess.run([str(copy / ".venv" / "bin" / "python"), "--version"], capture_output=True,
                             text=True, check=True).stdout
    # what the last install recorded: pyproject.toml and the interpreter (a venv without pip proves
    # that nothing is run when they are unchanged)
    (copy / ".venv" / ".installed").write_text((copy / "pyproject.toml").read_text() + version.rstrip("\n"))
    result = subprocess.run(["scripts/install"], cwd=copy, env=clean_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "==> Tether: already installed in .venv (pyproject.toml unchanged)\n"
    (copy / "pyproject.toml").write_text((copy / "pyproject.toml").read_text() + "\n# changed\n")
    changed = subprocess.run(["scripts/install"], cwd=copy, env=clean_env(), capture_output=True, text=True,
                             timeout=60)
    assert changed.returncode != 0 and "==> Updating pip in .venv" in changed.stdout, "a change reinstalls"
