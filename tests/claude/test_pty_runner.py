"""The PTY runner (tether.claude.pty_runner) with a real program on a real pseudo-terminal. The
"real terminal" is a pty too: the test types into its master side and reads what the person
would see there. Window size at start and after SIGWINCH, keys through, the program's exit
status, the terminal's mode restored on every way out."""

from __future__ import annotations

import os
import pathlib
import signal
import sys
import termios
from collections.abc import Iterator

import pytest

from tests.support.waiting import eventually
from tether.claude.pty_runner import PtyProcess, Terminal, set_window_size

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

PROGRAM = r"""
import os, signal, sys, termios, fcntl, struct
def size():
    rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8))
    return f"{rows}x{cols}"
signal.signal(signal.SIGWINCH, lambda *_: print(f"resized {size()}", flush=True))
print(f"tty={os.isatty(0)} size={size()} sid={os.getsid(0) == os.getpid()}", flush=True)
for line in sys.stdin:
    if line.strip() == "bye":
        sys.exit(7)
    print(f"got {line.strip()}", flush=True)
"""


class FakeDesk:
    """The person's terminal: a pty whose slave side is `tether claude`'s stdin and stdout."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        set_window_size(self.master, 30, 100)
        os.set_blocking(self.master, False)
        self.seen = b""

    def read(self) -> str:
        try:
            while chunk := os.read(self.master, 65536):
                self.seen += chunk
        except (BlockingIOError, OSError):
            pass
        return self.seen.decode(errors="replace")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def desk() -> Iterator[FakeDesk]:
    d = FakeDesk()
    yield d
    d.close()


async def test_a_program_runs_on_its_own_pty_with_the_terminals_size_and_keys(desk: FakeDesk,
                                                                             tmp_path: pathlib.Path) -> None:
    terminal = Terminal(desk.slave, desk.slave)
    before = termios.tcgetattr(desk.slave)
    with terminal.raw():
        assert not termios.tcgetattr(desk.slave)[3] & termios.ICANON  # raw while it runs
        proc = PtyProcess([sys.executable, "-c", PROGRAM], str(tmp_path), dict(os.environ), terminal)
        await proc.start()
        terminal.listen(proc.write)
        await eventually(lambda: "tty=True size=30x100 sid=True" in desk.read(), 15, message="the program's banner")
        desk.type("hello\r")  # Enter, as a terminal in raw mode sends it
        await eventually(lambda: "got hello" in desk.read(), 15, message="the keys")
        set_window_size(desk.slave, 40, 120)
        os.kill(os.getpid(), signal.SIGWINCH)  # what the terminal emulator sends us
        await eventually(lambda: "resized 40x120" in desk.read(), 15, message="the new size")
        desk.type("bye\r")
        assert await proc.wait() == 7
        terminal.listen(None)
    assert termios.tcgetattr(desk.slave) == before


async def test_terminate_ends_the_program_and_the_mode_is_restored_after_an_error(desk: FakeDesk,
                                                                                  tmp_path: pathlib.Path) -> None:
    terminal = Terminal(desk.slave, desk.slave)
    before = termios.tcgetattr(desk.slave)
    with pytest.raises(RuntimeError, match="boom"), terminal.raw():
        proc = PtyProcess([sys.executable, "-c", PROGRAM], str(tmp_path), dict(os.environ), terminal)
        await proc.start()
        await eventually(lambda: "tty=True" in desk.read(), 15, message="the program")
        proc.terminate()
        assert await proc.wait() == -signal.SIGTERM and proc.terminated_by_us
        raise RuntimeError("boom")
    assert termios.tcgetattr(desk.slave) == before


async def test_a_program_that_cannot_start(desk: FakeDesk, tmp_path: pathlib.Path) -> None:
    fds = len(os.listdir("/proc/self/fd"))
    proc = PtyProcess([str(tmp_path / "missing")], str(tmp_path), dict(os.environ), Terminal(desk.slave, desk.slave))
    with pytest.raises(OSError):
        await proc.start()
    assert len(os.listdir("/proc/self/fd")) == fds  # the pty it opened is closed again
