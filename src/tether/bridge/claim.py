"""One bridge per project directory (issue #10 item 1).

A bridge holds an exclusive ``flock`` on ``$TETHER_HOME/projects/<sanitised dir>/bridge.lock``
while it runs, and keeps in it who it is: ``{pid, directory, environmentId, sessionId, server}``.
A second ``tether remote-control`` (or ``tether up``) in the same directory — ``--continue``
included — finds the lock taken and refuses *before* it reads the crash-recovery pointer or
calls the server: re-registering a live bridge's environment would rotate its secret and stop
it ("environment secret not recognised"), and resuming its session would start a second agent.

The kernel drops the lock when the process ends, however it ends, so a crashed bridge never
blocks ``--continue``; the file's content is only a description of the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
from dataclasses import dataclass
from typing import Any, Final

from tether.bridge.pointer import pointer_path

CLAIM_FILE: Final = "bridge.lock"
MAX_CLAIM_BYTES: Final = 16 * 1024


@dataclass(frozen=True)
class ClaimInfo:
    """What a running bridge says about itself (fields it has not learnt yet are None)."""

    pid: int | None
    directory: str
    environment_id: str | None = None
    session_id: str | None = None
    server: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "directory": self.directory, "environmentId": self.environment_id,
                "sessionId": self.session_id, "server": self.server}


def parse_claim(raw: bytes, directory: str) -> ClaimInfo:
    """Best effort: a holder that has not written yet (or wrote garbage) is still a holder."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        return ClaimInfo(None, directory)

    def text(key: str) -> str | None:
        value = data.get(key)
        return value if isinstance(value, str) and value else None

    pid = data.get("pid")
    return ClaimInfo(pid if isinstance(pid, int) and not isinstance(pid, bool) else None, directory,
                     text("environmentId"), text("sessionId"), text("server"))


def claim_path(directory: pathlib.Path | str, home: pathlib.Path | None = None) -> pathlib.Path:
    return pointer_path(directory, home).with_name(CLAIM_FILE)


class DirectoryClaim:
    """The lock of one project directory, held by this process once :meth:`acquire` succeeds."""

    def __init__(self, directory: pathlib.Path | str, home: pathlib.Path | None = None) -> None:
        self.directory = os.path.realpath(directory)
        self.path = claim_path(directory, home)
        self._fd: int | None = None
        self._info = ClaimInfo(os.getpid(), self.directory)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> ClaimInfo | None:
        """Take the lock; None when taken, else what the bridge holding it says about itself."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raw = os.pread(fd, MAX_CLAIM_BYTES, 0)
            os.close(fd)
            return parse_claim(raw, self.directory)
        self._fd = fd
        self._write()
        return None

    def record(self, **changes: str | None) -> None:
        """Add what the bridge learnt (``environment_id``, ``session_id``, ``server``)."""
        self._info = ClaimInfo(self._info.pid, self.directory, **{
            "environment_id": self._info.environment_id, "session_id": self._info.session_id,
            "server": self._info.server, **changes})
        self._write()

    def _write(self) -> None:
        if self._fd is None:
            return
        data = json.dumps(self._info.to_json()).encode()
        with contextlib.suppress(OSError):  # the description is a courtesy; the lock is what counts
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> DirectoryClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder_of(directory: pathlib.Path | str, home: pathlib.Path | None = None) -> ClaimInfo | None:
    """The bridge running in ``directory`` (None: none is)."""
    probe = DirectoryClaim(directory, home)
    holder = probe.acquire()
    probe.release()
    return holder


def busy_message(holder: ClaimInfo, server: str | None = None) -> str:
    """What to tell someone who starts a second bridge for a directory that has one."""
    who = f"pid {holder.pid}" if holder.pid else "another process"
    facts = [who]
    if holder.environment_id:
        facts.append(f"environment {holder.environment_id}")
    if holder.session_id:
        facts.append(f"session {holder.session_id}")
    base = holder.server or server
    where = f" Its session: {base}/code/{holder.session_id}." if base and holder.session_id else ""
    kill = f", or `kill {holder.pid}`" if holder.pid else ""
    return (f"A bridge is already running in {holder.directory} ({', '.join(facts)}).{where} Starting a second "
            "one here would take its environment and session away from it. Use that one, or stop it first "
            f"(Ctrl-C in its terminal{kill}) and run this again"
            + (" with --continue to pick its session up." if holder.session_id else "."))
