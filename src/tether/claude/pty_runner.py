"""A program in a pseudo-terminal, wired to this process's terminal (``tether claude`` runs the
real ``claude`` TUI this way).

* :class:`Terminal` is the real terminal: raw mode while ``tether claude`` runs (every key goes to
  the program as typed: Ctrl-C, Esc, arrows; the program's line discipline turns Ctrl-C into its
  SIGINT), restored on every way out (:meth:`Terminal.raw` is a context manager, and an ``atexit``
  handler covers an exception that escapes it); its input is read without blocking and handed to
  whoever listens now (the program, or ``tether claude``'s own keys while the session is remote).
* :class:`PtyProcess` starts the program on a new pseudo-terminal as its controlling terminal, in a
  session of its own, with the real terminal's size and settings; copies its output to the real
  terminal; passes window-size changes on (``SIGWINCH``: the new size is set on the pty, and the
  kernel signals the program's foreground process group). Ctrl-Z suspends the program and this
  process together (:meth:`PtyProcess.pause`, :meth:`Terminal.suspend`, :meth:`PtyProcess.resume`):
  the shell's ``fg`` brings both back.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import signal
import struct
import termios
import tty
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Final

log = logging.getLogger("tether.claude.pty")
READ_CHUNK: Final = 1 << 16
DEFAULT_SIZE: Final = (24, 80)
# What a TUI may have switched on and not off when it was killed: bracketed paste, focus events,
# the kitty keyboard protocol, xterm's modifyOtherKeys, a hidden cursor, colours.
RESET_MODES: Final = b"\x1b[?2004l\x1b[?1004l\x1b[<u\x1b[>4;0m\x1b[?25h\x1b[0m"


def window_size(fd: int) -> tuple[int, int] | None:
    """(rows, columns) of the terminal on ``fd``, or None (not a terminal)."""
    try:
        rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return None
    return (rows, cols) if rows and cols else None


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except InterruptedError:
            continue


class Terminal:
    """The terminal ``tether claude`` was started in (``stdin``/``stdout`` fds)."""

    def __init__(self, stdin: int = 0, stdout: int = 1) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self.is_tty = os.isatty(stdin) and os.isatty(stdout)
        self._saved: list[Any] | None = None
        self._listener: Callable[[bytes], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def size(self) -> tuple[int, int]:
        return window_size(self.stdout) or window_size(self.stdin) or DEFAULT_SIZE

    def attributes(self) -> list[Any] | None:
        """The terminal's settings as they were before raw mode (for the program's pty)."""
        if self._saved is not None:
            return self._saved
        if not self.is_tty:
            return None
        return termios.tcgetattr(self.stdin)

    @contextlib.contextmanager
    def raw(self) -> Iterator[None]:
        """Raw mode, restored when the block ends however it ends."""
        if not self.is_tty:
            yield
            return
        self._saved = termios.tcgetattr(self.stdin)
        atexit.register(self.restore)
        tty.setraw(self.stdin, termios.TCSANOW)
        try:
            yield
        finally:
            self.restore()
            atexit.unregister(self.restore)

    def restore(self) -> None:
        saved, self._saved = self._saved, None
        if saved is not None:
            with contextlib.suppress(OSError, termios.error):
                write_all(self.stdout, RESET_MODES)
                termios.tcsetattr(self.stdin, termios.TCSAFLUSH, saved)

    def write(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            write_all(self.stdout, data)

    def suspend(self) -> None:
        """Job control (Ctrl-Z): the terminal as it was, this process stopped until the shell's
        ``fg``; then raw mode again. Returns once continued (at once when nothing can stop us: an
        orphaned process group)."""
        saved = self._saved
        if saved is None:
            return
        with contextlib.suppress(OSError, termios.error):
            write_all(self.stdout, RESET_MODES)
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)
        os.kill(os.getpid(), signal.SIGTSTP)
        with contextlib.suppress(termios.error):
            tty.setraw(self.stdin, termios.TCSANOW)

    def say(self, text: str) -> None:
        """A line of ``tether claude``'s own (raw mode: no automatic carriage return)."""
        self.write(text.replace("\r\n", "\n").replace("\n", "\r\n").encode() + b"\r\n")

    def flush_input(self) -> None:
        """Forget keys typed but not read yet (typed for a program that has ended)."""
        if self.is_tty:
            with contextlib.suppress(termios.error):
                termios.tcflush(self.stdin, termios.TCIFLUSH)

    def listen(self, listener: Callable[[bytes], None] | None) -> None:
        """Hand the keys typed from now on to ``listener`` (None: they wait unread)."""
        loop = asyncio.get_running_loop()
        if self._listener is not None and listener is None:
            loop.remove_reader(self.stdin)
        elif self._listener is None and listener is not None:
            loop.add_reader(self.stdin, self._on_input)
        self._listener = listener

    def _on_input(self, *_: object) -> None:
        try:
            data = os.read(self.stdin, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the terminal went away (end of input)
            asyncio.get_running_loop().remove_reader(self.stdin)
            self._listener = None
            return
        if self._listener is not None:
            self._listener(data)


class PtyProcess:
    """One run of a program on its own pseudo-terminal."""

    def __init__(self, argv: Sequence[str], cwd: str, env: Mapping[str, str], terminal: Terminal) -> None:
        self.argv = list(argv)
        self.cwd = cwd
        self.env = dict(env)
        self.terminal = terminal
        self.master: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._output_done = asyncio.Event()
        self.terminated_by_us = False

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        """Start the program (raises ``OSError`` when it cannot be started)."""
        master, slave = os.openpty()
        try:
            rows, cols = self.terminal.size()
            set_window_size(master, rows, cols)
            attrs = self.terminal.attributes()
            if attrs is not None:
                with contextlib.suppress(termios.error):
                    termios.tcsetattr(slave, termios.TCSANOW, attrs)
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, cwd=self.cwd, env=self.env, stdin=slave, stdout=slave, stderr=slave,
                start_new_session=True, preexec_fn=_take_controlling_terminal)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        self.master = master
        loop = asyncio.get_running_loop()
        loop.add_reader(master, self._on_output)
        loop.add_signal_handler(signal.SIGWINCH, self.resize)
        log.info("started pid %s on a pty: %s", self.proc.pid, " ".join(self.argv))

    def _on_output(self) -> None:
        assert self.master is not None
        try:
            data = os.read(self.master, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every process holding the pty's other side is gone
            data = b""
        if data:
            self.terminal.write(data)
            return
        asyncio.get_running_loop().remove_reader(self.master)
        self._output_done.set()

    def write(self, data: bytes) -> None:
        """Keys for the program, as if typed."""
        if self.master is not None:
            with contextlib.suppress(OSError):
                write_all(self.master, data)

    def resize(self) -> None:
        if self.master is not None:
            rows, cols = self.terminal.size()
            with contextlib.suppress(OSError):
                set_window_size(self.master, rows, cols)

    def pause(self) -> None:
        """Stop the program (its whole process group) while ``tether claude`` is suspended. SIGSTOP:
        a stop request from the terminal (SIGTSTP) is discarded for a process group without a job
        control shell, as the program's is."""
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Continue the program and have it redraw at the terminal's current size."""
        if self.running and self.proc is not None:
            self.resize()
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGCONT)
                os.killpg(self.proc.pid, signal.SIGWINCH)

    def terminate(self) -> None:
        """SIGTERM: the program ends cleanly (the ``claude`` TUI writes its last records and exits)."""
        if self.running and self.proc is not None:
            self.terminated_by_us = True
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.running and self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def wait(self) -> int:
        """The exit status (``-N`` for a signal), once the program and its output have ended."""
        assert self.proc is not None
        code = await self.proc.wait()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):  # a grandchild may still hold the pty open
                await self._output_done.wait()
        self._close()
        return code

    def _close(self) -> None:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGWINCH)
        if self.master is not None:
            loop.remove_reader(self.master)
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


def _take_controlling_terminal() -> None:  # in the child, after setsid(): stdin is the pty
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
