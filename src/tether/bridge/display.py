"""How the bridge talks to a person or a program (reference §5.10).

* :class:`LiveDisplay` (stdin and stdout are a terminal): a rich live panel redrawn every
  second — state (Ready / Connected / Reconnecting / Failed), the web link, the capacity line,
  one line per session (title, current activity, link to ``{server}/code/{session}``), and a
  QR code of the link toggled with space; ``w`` toggles new sessions between the current
  directory and an isolated worktree. Events scroll above the panel.
* :class:`PlainSink` (headless): one plain log line per event.
* :class:`JsonSink` (``--json``): one JSON object per event: ``{"event", "time", "message", …}``.

:func:`render_status` is a pure function of a :class:`~tether.bridge.status.BridgeSnapshot`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import IO, Any, Final

import segno
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from tether.bridge.status import STATE_LABELS, BridgeSnapshot

NOISY_EVENTS: Final = frozenset({"poll_error"})


def qr_text(url: str) -> str:
    """A compact terminal QR code (error correction L) of ``url``."""
    buf = io.StringIO()
    segno.make(url, error="l", micro=False).terminal(out=buf, compact=True, border=1)
    return buf.getvalue().rstrip("\n")


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m {int(seconds % 60)}s"
    return f"{int(seconds // 3600)}h {int(seconds % 3600 // 60)}m"


def render_status(snap: BridgeSnapshot, *, show_qr: bool = False) -> RenderableType:
    lines: list[RenderableType] = []
    label = STATE_LABELS[snap.state]
    style = {"ready": "green", "connected": "green", "reconnecting": "yellow", "failed": "red"}.get(snap.state, "cyan")
    head = Text("● ", style=style)
    head.append(label, style=f"bold {style}")
    if snap.state == "reconnecting":
        if snap.retry_in is not None:
            head.append(f" · retrying in {_duration(snap.retry_in)}")
        if snap.disconnected_for is not None:
            head.append(f" · disconnected {_duration(snap.disconnected_for)}")
    elif snap.state == "failed" and snap.failure:
        head.append(f" · {snap.failure}")
    lines.append(head)
    if snap.state == "failed":
        lines.append(Text("Something went wrong, please try again.", style="red"))
    else:
        url = snap.sessions[0].url if (snap.sessions and not snap.multi_session) else snap.connect_url
        lead = "Continue coding in the web client: " if snap.sessions else "Code everywhere with the web client: "
        footer = Text(lead)
        footer.append(url, style=f"link {url} underline")
        lines.append(footer)
    if snap.multi_session:
        where = "an isolated worktree" if snap.spawn_mode == "worktree" else "the current directory"
        lines.append(Text(f"Capacity: {snap.active}/{snap.max_sessions} · New sessions will be created in {where}"))
    else:
        lines.append(Text("Single session · exits when complete"))
    for s in snap.sessions:
        line = Text("  • ")
        line.append(s.title, style="bold")
        if s.state == "requires_action":
            line.append(" · waiting for you", style="yellow")
        if s.activity:
            line.append(f" · {s.activity}")
        line.append(" · ")
        line.append(s.url, style=f"link {s.url}")
        lines.append(line)
    if show_qr:
        url = snap.sessions[0].url if (snap.sessions and not snap.multi_session) else snap.connect_url
        lines.append(Text(qr_text(url)))
    keys = "space: QR code"
    if snap.multi_session and snap.worktree_available:
        keys += " · w: same-dir/worktree"
    keys += " · Ctrl-C: stop"
    lines.append(Text(keys, style="dim"))
    return Group(*lines)


class LiveDisplay:
    """The live status panel. Run :meth:`run` as a task; events print above it."""

    def __init__(self, snapshot: Callable[[], BridgeSnapshot], console: Console | None = None,
                 *, show_qr: bool = False, verbose: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self._snapshot = snapshot
        self.show_qr = show_qr
        self.verbose = verbose

    def toggle_qr(self) -> None:
        self.show_qr = not self.show_qr

    def event(self, name: str, message: str, /, **fields: Any) -> None:
        if name in NOISY_EVENTS and not self.verbose:
            return
        style = "red" if name in ("failed", "session_failed") else "yellow" if name == "warning" else ""
        stamp = time.strftime("%H:%M:%S")
        self.console.print(Text(f"{stamp} ", style="dim") + Text(message, style=style))

    def render(self) -> RenderableType:
        return render_status(self._snapshot(), show_qr=self.show_qr)

    async def run(self) -> None:
        with Live(get_renderable=self.render, console=self.console, refresh_per_second=1, transient=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            try:
                await asyncio.Event().wait()
            finally:
                live.update(self.render(), refresh=True)


class PlainSink:
    """Headless: ``HH:MM:SS message`` lines."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out

    def event(self, name: str, message: str, /, **fields: Any) -> None:
        out = self._out or sys.stdout
        out.write(f"{time.strftime('%H:%M:%S')} {message}\n")
        out.flush()


class JsonSink:
    """``--json``: one object per line with ``event``, ``time`` (Unix seconds), ``message`` and fields."""

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out

    def event(self, name: str, message: str, /, **fields: Any) -> None:
        out = self._out or sys.stdout
        out.write(json.dumps({"event": name, "time": round(time.time(), 3), "message": message, **fields},
                             default=str) + "\n")
        out.flush()


class TeeSink:
    """Several sinks at once (e.g. the live display and a debug log)."""

    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def event(self, name: str, message: str, /, **fields: Any) -> None:
        for sink in self.sinks:
            sink.event(name, message, **fields)


@contextlib.contextmanager
def key_presses(on_key: Callable[[str], None], stream: IO[str] | None = None) -> Iterator[bool]:
    """Deliver single key presses of a terminal's stdin to ``on_key`` (cbreak mode: no echo, no
    line buffering; Ctrl-C still raises SIGINT). Yields False (and does nothing) when stdin is not
    a terminal. The terminal is restored on exit."""
    stream = stream or sys.stdin
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        yield False
        return
    if not os.isatty(fd):
        yield False
        return
    import termios
    import tty

    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(fd)

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            return
        for ch in data.decode(errors="ignore"):
            on_key(ch)

    tty.setcbreak(fd)
    loop.add_reader(fd, readable)
    try:
        yield True
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
