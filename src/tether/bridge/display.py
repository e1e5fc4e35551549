"""How the bridge talks to a person or a program (docs/protocol.md §11.7).

* :class:`LiveDisplay` (stdin and stdout are a terminal): a rich live panel redrawn every
  second — state (Ready / Connected / Reconnecting / Failed), the web link, the capacity line,
  one line per session (title, idle / waiting for you / current activity, link to
  ``{server}/code/{session}``), and a QR code toggled with space — a one-time login link that
  opens the web link, so a phone that is not logged in gets in by scanning it; ``w`` toggles new
  sessions between the current directory and an isolated worktree. Events scroll above the panel.
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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Final
from urllib.parse import urlsplit

import segno
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from tether.bridge.status import STATE_LABELS, BridgeSnapshot, SessionView
from tether.client.api import LoginLink
from tether.errors import TetherError

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


@dataclass(frozen=True)
class QrView:
    """What the QR area shows: a caption, and the code of ``url`` (none while ``url`` is empty)."""

    url: str
    caption: str = ""


@dataclass(frozen=True)
class ShownLink:
    """The one-time login link behind the QR code, for ``target`` (the page it opens)."""

    target: str
    url: str
    expires_at: float


LOGIN_LINK_MARGIN_S: Final = 60.0  # a link is replaced this long before it expires (time to scan it)


def login_link_due(shown: ShownLink | None, target: str, now: float, margin: float = LOGIN_LINK_MARGIN_S) -> bool:
    """Whether the QR code needs a fresh login link: none yet, another page, or about to expire."""
    return shown is None or shown.target != target or now >= shown.expires_at - margin


def next_path(url: str) -> str:
    """The path and query of ``url``: where a login link sends the browser afterwards."""
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def render_status(snap: BridgeSnapshot, *, show_qr: bool = False, qr: QrView | None = None) -> RenderableType:
    """The panel; with ``show_qr``, the QR code of ``qr`` (default: the web link itself)."""
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
        url = snap.web_url
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
        lines.append(_session_line(s))
    if show_qr:
        qr = qr or QrView(snap.web_url)
        if qr.caption:
            lines.append(Text(qr.caption, style="dim"))
        if qr.url:
            lines.append(Text(qr_text(qr.url)))
    keys = "space: QR code"
    if snap.multi_session and snap.worktree_available:
        keys += " · w: same-dir/worktree"
    keys += " · Ctrl-C: stop"
    lines.append(Text(keys, style="dim"))
    return Group(*lines)


def _session_line(s: SessionView) -> Text:
    line = Text("  • ")
    line.append(s.title, style="bold")
    if s.state == "requires_action":
        line.append(" · waiting for you", style="yellow")
    elif s.state == "idle":
        line.append(" · idle", style="dim")
    if s.activity:
        line.append(f" · {s.activity}")
    line.append(" · ")
    line.append(s.url, style=f"link {s.url}")
    return line


LoginLinks = Callable[[str], Awaitable[LoginLink]]
"""Mints a one-time login link that opens the given page (``ApiClient.create_login_link``)."""


class LiveDisplay:
    """The live status panel. Run :meth:`run` as a task; events print above it.

    With ``login_links``, the QR code is a one-time login link that opens the web link, so a
    phone that is not logged in yet gets in by scanning it: minted when the code is shown
    (each time: the last one may have been used), replaced before it expires, and hidden when
    the display ends so no live credential stays in the scrollback."""

    def __init__(self, snapshot: Callable[[], BridgeSnapshot], console: Console | None = None,
                 *, show_qr: bool = False, verbose: bool = False, login_links: LoginLinks | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.console = console or Console(highlight=False)
        self._snapshot = snapshot
        self.show_qr = show_qr
        self.verbose = verbose
        self._login_links = login_links
        self._clock = clock
        self._link: ShownLink | None = None
        self._link_error: str | None = None
        self._qr_toggled = asyncio.Event()

    def toggle_qr(self) -> None:
        self.show_qr = not self.show_qr
        self._link, self._link_error = None, None  # a QR shown again gets a fresh one-time link
        self._qr_toggled.set()

    def event(self, name: str, message: str, /, **fields: Any) -> None:
        if name in NOISY_EVENTS and not self.verbose:
            return
        style = "red" if name in ("failed", "session_failed") else "yellow" if name == "warning" else ""
        stamp = time.strftime("%H:%M:%S")
        self.console.print(Text(f"{stamp} ", style="dim") + Text(message, style=style))

    def qr_view(self, snap: BridgeSnapshot) -> QrView | None:
        if self._login_links is None:
            return None
        link, target = self._link, snap.web_url
        if link is not None and link.target == target and self._clock() < link.expires_at:
            minutes = max(1, round((link.expires_at - self._clock()) / 60))
            return QrView(link.url, "Scan with your phone to log in and open the web client here "
                                    f"(a one-time link, valid for {minutes} min).")
        if self._link_error is not None:
            return QrView(target, f"Log in on your phone first: no login link ({self._link_error}).")
        return QrView("", "Getting a one-time login link for your phone…")

    def render(self) -> RenderableType:
        snap = self._snapshot()
        return render_status(snap, show_qr=self.show_qr, qr=self.qr_view(snap) if self.show_qr else None)

    async def run(self) -> None:
        with Live(get_renderable=self.render, console=self.console, refresh_per_second=1, transient=False,
                  redirect_stdout=False, redirect_stderr=False) as live:
            try:
                if self._login_links is not None:
                    await self._keep_login_link()
                else:
                    await asyncio.Event().wait()
            finally:
                self.show_qr = False
                live.update(self.render(), refresh=True)

    async def _keep_login_link(self) -> None:
        assert self._login_links is not None
        while True:
            self._qr_toggled.clear()
            if self.show_qr and self._link_error is None:
                target = self._snapshot().web_url
                if login_link_due(self._link, target, self._clock()):
                    try:
                        made = await self._login_links(target)
                    except (TetherError, ValueError) as exc:
                        self._link_error = exc.message if isinstance(exc, TetherError) else str(exc)
                    else:
                        self._link = ShownLink(target, made.url, self._clock() + made.expires_in)
            # while the code shows, look again each second (the page it opens may change)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._qr_toggled.wait(), 1.0 if self.show_qr else None)


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
