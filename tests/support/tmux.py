"""Drive a terminal program the way a person does: tmux runs it, send-keys types, capture-pane reads.

Each :class:`TmuxTerminal` has its own tmux server (``-L <unique name>``), so tests never see
each other's panes. The pane stays after the program exits (``remain-on-exit``) so that its
last screen and exit status can be read.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence

from tests.support.server import wait_until


def tmux_bin() -> str:
    found = shutil.which("tmux")
    if found is None:
        raise RuntimeError("tmux is not installed; run scripts/install-test-deps")
    return found


class TmuxTerminal:
    def __init__(self, argv: Sequence[str], env: dict[str, str], *, cwd: str | None = None,
                 width: int = 120, height: int = 40) -> None:
        self.socket = f"tether-test-{uuid.uuid4().hex[:12]}"
        self.env = {**env, "TERM": "xterm-256color"}
        self.env.pop("TMUX", None)
        self.argv = list(argv)
        self.cwd = cwd
        self.size = (width, height)
        self._status_dir = tempfile.mkdtemp(prefix="tmux-status-")
        self._status_file = pathlib.Path(self._status_dir) / "status"

    def _tmux(self, *args: str, check: bool = True) -> str:
        out = subprocess.run([tmux_bin(), "-L", self.socket, *args], capture_output=True, text=True,
                             env=self.env, cwd=self.cwd, timeout=30)
        if check and out.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)} failed: {out.stderr.strip()}")
        return out.stdout

    def start(self) -> TmuxTerminal:
        width, height = self.size
        wrapped = [sys.executable, str(pathlib.Path(__file__).with_name("exit_status.py")), str(self._status_file),
                   *self.argv]
        command = " ".join(_quote(a) for a in wrapped)
        # The pane must outlive the program (remain-on-exit) even when it exits at once, and tmux may
        # run a new session's command before it has read a config file: so the session starts with
        # a placeholder that never exits, the options are set, and only then the program replaces it.
        self._tmux("new-session", "-d", "-s", "t", "-x", str(width), "-y", str(height), "tail -f /dev/null")
        self._tmux("set-option", "-g", "history-limit", "20000")
        self._tmux("set-option", "-w", "-t", "t", "remain-on-exit", "on")
        self._tmux("clear-history", "-t", "t")
        self._tmux("respawn-pane", "-k", "-t", "t", command)
        return self

    def type(self, text: str) -> None:
        """Type ``text`` literally (no key names)."""
        self._tmux("send-keys", "-t", "t", "-l", text)

    def press(self, *keys: str) -> None:
        """Press keys by tmux name: ``Enter``, ``Escape``, ``C-c``, ``C-d`` …"""
        self._tmux("send-keys", "-t", "t", *keys)

    def line(self, text: str) -> None:
        self.type(text)
        self.press("Enter")

    def screen(self) -> str:
        """What the terminal shows now."""
        return self._tmux("capture-pane", "-p", "-J", "-t", "t")

    def scrollback(self) -> str:
        """Everything the program printed (scrolled-off lines too)."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")

    def exit_status(self) -> int | None:
        """The program's exit status once it ended, else None (recorded by exit_status.py)."""
        try:
            return int(self._status_file.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def wait_for(self, wanted: str | Callable[[str], bool], timeout: float = 30.0, *, everything: bool = True) -> str:
        """Wait until the output (all of it, or only the screen) contains ``wanted`` / satisfies it.

        A string is looked for with runs of whitespace squashed to one space on both sides:
        rich wraps long lines at the terminal's width with real line breaks."""
        def check() -> str | None:
            text = self.scrollback() if everything else self.screen()
            ok = wanted(text) if callable(wanted) else squash(wanted) in squash(text)
            return text if ok else None

        try:
            return str(wait_until(check, timeout, 0.1, f"{wanted!r} in the terminal"))
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {wanted!r}; the terminal shows:\n{self.screen()}") from None

    def wait_exit(self, timeout: float = 30.0) -> int:
        return int(wait_until(lambda: self.exit_status() is not None and (self.exit_status(),), timeout, 0.1,
                              "the program to exit")[0])

    def kill(self) -> None:
        self._tmux("kill-server", check=False)
        shutil.rmtree(self._status_dir, ignore_errors=True)

    def __enter__(self) -> TmuxTerminal:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def squash(text: str) -> str:
    return " ".join(text.split())


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\"'\"'") + "'"
