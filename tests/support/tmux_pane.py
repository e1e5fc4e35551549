"""Drive a terminal program in tmux (its own server socket): type with send-keys, read with
capture-pane, wait for text to appear (a condition wait with a timeout, never a fixed sleep).

The program runs under a shell, not as the pane's own process: tmux sends SIGCONT to a pane
process that stops, and the REPL's laptop-sleep test must keep the program stopped (SIGSTOP)."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Mapping

from tests.support.server import ROOT


def tmux_bin() -> str:
    found = shutil.which("tmux")
    if found is None:
        raise RuntimeError("tmux is not installed; run scripts/install-test-deps")
    return found


class PaneTerminal:
    """One tmux session running ``argv`` in ``cwd`` with exactly ``env`` (plus PATH/HOME defaults)."""

    def __init__(self, argv: list[str], cwd: pathlib.Path, env: Mapping[str, str], workdir: pathlib.Path,
                 width: int = 160, height: int = 50) -> None:
        self.socket = workdir / "tmux.sock"
        self.log = workdir / "terminal.log"
        conf = workdir / "tmux.conf"
        conf.write_text("set -g history-limit 50000\nset -g status off\n")
        # Not exec'd: the pane's process is a shell waiting for the program. tmux sends SIGCONT to a
        # pane process that stops, which would defeat a SIGSTOP of the program (the sleep tests).
        command = "env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + \
                  " ".join(shlex.quote(a) for a in argv) + "; exit $?"
        self._tmux("-f", str(conf), "new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height),
                   "-c", str(cwd), command)
        self._tmux("set-option", "-t", "t", "remain-on-exit", "on")
        shell = int(self._tmux("display-message", "-p", "-t", "t", "#{pane_pid}").strip())
        self.pid = self._child_of(shell)

    @staticmethod
    def _child_of(pid: int, timeout: float = 10.0) -> int:
        """The program: the pane shell's child (``env`` execs it, so its pid stays)."""
        path = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
        deadline = time.monotonic() + timeout
        while True:
            children = path.read_text().split() if path.exists() else []
            if children:
                return int(children[0])
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pane shell {pid} started no program")
            time.sleep(0.01)

    def _tmux(self, *args: str) -> str:
        out = subprocess.run([tmux_bin(), "-S", str(self.socket), *args], capture_output=True, text=True,
                             timeout=30, cwd=ROOT)
        if out.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args[:2])} failed: {out.stderr.strip()}")
        return out.stdout

    def text(self) -> str:
        """Everything the terminal has shown (scrollback and screen), wrapped lines joined."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-t", "t")

    def type(self, text: str, enter: bool = True) -> None:
        self._tmux("send-keys", "-t", "t", "-l", text)
        if enter:
            self._tmux("send-keys", "-t", "t", "Enter")

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", "t", *keys)

    def wait_for(self, pattern: str, timeout: float = 30.0, *, count: int = 1, screen: bool = False) -> re.Match[str]:
        """Wait until ``pattern`` (a regex) has appeared ``count`` times; the last match."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen() if screen else self.text()
            found = list(rx.finditer(text))
            if len(found) >= count:
                return found[count - 1]
            if time.monotonic() > deadline:
                raise AssertionError(f"no {pattern!r} (x{count}) on the terminal after {timeout} s:\n{text[-4000:]}")
            time.sleep(0.05)

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.text()))

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return self._tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip() != "1"

    def wait_exit(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while self._tmux("display-message", "-p", "-t", "t", "#{pane_dead}").strip() != "1":
            if time.monotonic() > deadline:
                raise AssertionError(f"the program did not exit:\n{self.text()[-3000:]}")
            time.sleep(0.05)
        return int(self._tmux("display-message", "-p", "-t", "t", "#{pane_dead_status}").strip() or "0")

    def close(self) -> None:
        try:
            self.log.write_text(self.text())
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            pass
        subprocess.run([tmux_bin(), "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30)
