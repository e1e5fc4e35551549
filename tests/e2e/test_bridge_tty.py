"""`tether rc` on a terminal (a pseudo-terminal): the live display, the keys, Ctrl-C."""

from __future__ import annotations

import os
import pathlib
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from tests.support.bridge import SCRIPTED
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)")


class Terminal:
    def __init__(self, argv: list[str], cwd: pathlib.Path, env: dict[str, str]) -> None:
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave,
                                     start_new_session=True)
        os.close(slave)
        self.raw = b""

    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode(errors="replace")

    def expect(self, pattern: str, timeout: float = 30.0) -> None:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while not rx.search(self.text()[-20000:]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {pattern!r} on the terminal:\n{self.text()[-3000:]}")
            ready, _, _ = select.select([self.master], [], [], min(left, 0.5))
            if ready:
                try:
                    self.raw += os.read(self.master, 65536)
                except OSError:
                    raise AssertionError(f"the terminal closed before {pattern!r}:\n{self.text()[-3000:]}") from None

    def mark(self) -> None:
        """Forget what was shown so far (to look for what comes next)."""
        self.raw = b""

    def press(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)


def test_live_display_keys_and_ctrl_c(server: ServerProcess, owner_token: str, tmp_path: pathlib.Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
    env.update(TETHER_HOME=str(tmp_path / "home"), TETHER_SERVER=server.url, TETHER_TOKEN=owner_token,
               TERM="xterm-256color", COLUMNS="160", LINES="60")
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)  # worktree mode is available: `w` works
    term = Terminal([sys.executable, "-m", "tether.cli.main", "rc", "--agent", SCRIPTED, "--name", "tty test"],
                    project, env)
    try:
        term.expect(r"Agent: tether agent")
        term.expect(r"● Connected")
        term.expect(r"Capacity: 1/32 · New sessions will be created in the current directory")
        term.expect(r"• tty test · " + re.escape(server.url) + r"/code/session_\w+")
        term.expect(r"space: QR code · w: same-dir/worktree · Ctrl-C: stop")
        assert "█" not in term.text()
        term.mark()
        term.press(b" ")
        term.expect("█▀▀▀▀▀▀▀█")  # the QR code
        term.mark()
        term.press(b"w")
        term.expect(r"New sessions will be created in an isolated worktree")
        term.mark()
        term.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        term.expect(r"stays open: resume it with `tether remote-control --continue`")
        term.expect(r"Remote Control stopped")
        assert term.proc.wait(30) == 0
    finally:
        term.close()
