"""NDJSON line splitting with a hard line-size bound (sans-I/O).

Stream-json peers (the agent's stdout, session-ingress frames) send one JSON object
per ``\\n``-terminated line. A reader that buffers "until the newline" must not grow
without bound when a peer misbehaves, and must not lose its place either: an
over-long line is *skipped* up to its newline and reported once as
:class:`Oversize`, after which splitting carries on with the next line.

Feed bytes with :meth:`LineSplitter.feed`; call :meth:`LineSplitter.close` at end of
input to get a trailing line that had no newline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "LineSplitter",
    "Oversize",
    "Piece",
]

DEFAULT_MAX_LINE_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class Oversize:
    """A line longer than the bound was dropped; ``size`` bytes (without the newline)."""

    size: int


Piece = bytes | Oversize


class LineSplitter:
    """Split a byte stream into lines of at most ``max_line_bytes`` (newline excluded)."""

    __slots__ = ("_buffer", "_discarded", "_discarding", "_max")

    def __init__(self, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError(f"max_line_bytes must be at least 1, got {max_line_bytes}")
        self._max = max_line_bytes
        self._buffer = bytearray()
        self._discarding = False
        self._discarded = 0

    @property
    def buffered(self) -> int:
        """Bytes held for an unfinished line (never more than ``max_line_bytes``)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Piece]:
        """Add ``data``; return the complete lines (without ``\\n``) and oversize reports, in order."""
        out: list[Piece] = []
        start = 0
        end = len(data)
        while start < end:
            newline = data.find(b"\n", start)
            stop = end if newline < 0 else newline
            chunk = data[start:stop]
            if self._discarding:
                self._discarded += len(chunk)
            elif len(self._buffer) + len(chunk) > self._max:
                self._discarding = True
                self._discarded = len(self._buffer) + len(chunk)
                self._buffer.clear()
            else:
                self._buffer += chunk
            if newline < 0:
                break
            out.append(self._finish_line())
            start = newline + 1
        return out

    def close(self) -> list[Piece]:
        """End of input: the unterminated last line, if any."""
        if self._discarding or self._buffer:
            return [self._finish_line()]
        return []

    def _finish_line(self) -> Piece:
        if self._discarding:
            piece: Piece = Oversize(self._discarded)
            self._discarding = False
            self._discarded = 0
            return piece
        line = bytes(self._buffer)
        self._buffer.clear()
        return line
