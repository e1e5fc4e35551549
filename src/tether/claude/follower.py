"""Following a JSON-lines file another process appends to: Claude Code's transcript, and the
hook events ``tether claude`` asks the TUI to write (docs/protocol.md §14.7).

Polling (the owner calls :meth:`LineFollower.poll` every ~100 ms): portable, and cheap for one
file. Partial lines wait for their newline (:class:`~tether.protocol.line_splitter.LineSplitter`);
a file that was truncated, replaced (another inode) or rewritten in place (its first bytes
changed) is read again from the start (:func:`~tether.protocol.claude_transcript.reading_plan`) —
whoever consumes the lines skips what it has seen (records by uuid). A missing file is waited for.

:class:`TranscriptReader` turns the transcript's lines into records in conversation order
(:class:`~tether.protocol.claude_transcript.ChainOrder`).
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Final

from tether.protocol.claude_transcript import ChainOrder, FileState, Record, parse_line, reading_plan
from tether.protocol.line_splitter import LineSplitter, Oversize

log = logging.getLogger("tether.claude.follower")
READ_CHUNK: Final = 1 << 20
MAX_LINE: Final = 64 << 20  # a transcript line holds a whole message (a big file read or written)
HEAD_BYTES: Final = 256


class LineFollower:
    def __init__(self, path: pathlib.Path | None, *, max_line: int = MAX_LINE) -> None:
        self.path = path
        self._max_line = max_line
        self._inode: int | None = None
        self.offset = 0
        self._head = b""
        self._splitter = LineSplitter(max_line)
        self.restarts = 0

    def switch(self, path: pathlib.Path | None) -> None:
        """Follow another file, from its start."""
        self.path = path
        self._reset()

    def _reset(self) -> None:
        self._inode = None
        self.offset = 0
        self._head = b""  # the file's first bytes: rewritten in place (same inode, not shorter) if they change
        self._splitter = LineSplitter(self._max_line)

    def _state(self) -> FileState | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return FileState(st.st_ino, st.st_size)

    def poll(self) -> list[bytes]:
        """The complete lines appended since the last poll (a partial last line waits)."""
        state = self._state()
        plan = reading_plan(state, self._inode, self.offset)
        if plan == "restart":
            log.info("%s was truncated or replaced; reading it again from the start", self.path)
            self.restarts += 1
            self._reset()
            plan = reading_plan(state, None, 0)
        if plan != "read" or self.path is None or state is None:
            return []
        lines: list[bytes] = []
        try:
            with open(self.path, "rb") as f:
                inode = os.fstat(f.fileno()).st_ino
                if self._inode is not None and inode != self._inode:
                    return []  # replaced between stat and open: the next poll starts over
                if self._head and f.read(len(self._head)) != self._head:
                    log.info("%s was rewritten; reading it again from the start", self.path)
                    self.restarts += 1
                    self._reset()
                self._inode = inode
                f.seek(self.offset)
                while chunk := f.read(READ_CHUNK):
                    if len(self._head) < HEAD_BYTES and self.offset < HEAD_BYTES:
                        self._head += chunk[:HEAD_BYTES - self.offset]
                    self.offset += len(chunk)
                    lines += self._lines(self._splitter.feed(chunk))
        except OSError as exc:
            log.warning("cannot read %s: %s", self.path, exc)
        return lines

    def _lines(self, pieces: list[bytes | Oversize]) -> list[bytes]:
        out: list[bytes] = []
        for piece in pieces:
            if isinstance(piece, Oversize):
                log.warning("skipped a %d-byte line of %s", piece.size, self.path)
            else:
                out.append(piece)
        return out


class TranscriptReader:
    """The records of one transcript (those with a ``uuid``), parents first."""

    def __init__(self, path: pathlib.Path | None, *, hold_s: float = 2.0) -> None:
        self.follower = LineFollower(path)
        self.order = ChainOrder(hold_s=hold_s)

    @property
    def path(self) -> pathlib.Path | None:
        return self.follower.path

    def switch(self, path: pathlib.Path | None) -> None:
        self.follower.switch(path)

    def read(self, now: float, *, final: bool = False) -> list[Record]:
        """New records in order; ``final``: the writer has stopped, release everything held."""
        out: list[Record] = []
        for line in self.follower.poll():
            record = parse_line(line)
            if record is not None:
                out += self.order.push(record, now)
        out += self.order.flush() if final else self.order.expire(now)
        return out
