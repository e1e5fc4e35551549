"""Why a session ended: the ``reason`` a client may give when it archives a session (a Tether
addition to S4's empty body, docs/protocol.md §4.2), and which endings a new session in the same
place continues. Pure constants."""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "ARCHIVE_REASONS",
    "SUCCEEDED_ON_RESTART",
    "ArchiveReason",
]

ArchiveReason = Literal["user", "bridge_stopped", "bridge_failed", "session_ended", "session_timeout", "replaced",
                        "start_failed"]

ARCHIVE_REASONS: Final[tuple[ArchiveReason, ...]] = (
    "user",             # a person archived it (the web client's Archive button)
    "bridge_stopped",   # its bridge was stopped (Ctrl-C / SIGTERM) while it ran
    "bridge_failed",    # its bridge stopped after an error it could not recover from
    "session_ended",    # its agent exited (a multi-session bridge archives what ended)
    "session_timeout",  # it ran longer than the bridge's --session-timeout
    "replaced",         # a new bridge started a fresh session in the same directory
    "start_failed",     # a runner could not prepare it (a refused source, a failed clone)
)

SUCCEEDED_ON_RESTART: Final[frozenset[ArchiveReason]] = frozenset({"replaced", "bridge_failed"})
"""Endings whose work goes on in the next session a bridge creates on the same machine and
directory: the server records that session as the archived one's ``successor_session_id``.
A session a person archived, or whose agent finished, has no successor."""
