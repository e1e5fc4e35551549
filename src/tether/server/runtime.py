"""Where a running server is: the runtime file and lock in its data directory.

``tether server`` holds an exclusive ``flock`` on ``<data dir>/server.lock`` for its whole life
and, once it listens, writes ``<data dir>/server.json`` (like Jupyter's ``jpserver-<pid>.json``):
``{pid, url, host, port, data_dir, started_at, version, detached, log_file}``. The lock is the
truth about liveness — the kernel drops it when the process ends, however it ends — so a
runtime file left behind by a killed server is recognised as stale without trusting a pid that
may have been reused. What this gives:

* a second server on the same data directory is refused before it touches the database;
* ``tether admin login-link`` puts the running server's URL in its links;
* ``tether up`` reuses a server that runs from its data directory, and refuses clearly when
  another server holds the port;
* ``tether server --detach`` / ``stop`` / ``status``.

:func:`parse_runtime` is pure; the rest does small file operations (POSIX ``fcntl``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pathlib
import uuid
from dataclasses import asdict, dataclass
from typing import Any, Final

RUNTIME_FILE: Final = "server.json"
LOCK_FILE: Final = "server.lock"
MAX_RUNTIME_BYTES: Final = 64 * 1024


@dataclass(frozen=True)
class RuntimeInfo:
    pid: int
    url: str
    host: str
    port: int
    data_dir: str
    started_at: float
    version: str
    detached: bool = False
    log_file: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_runtime(raw: bytes | str) -> RuntimeInfo | None:
    """The runtime info in ``raw``, or None when it is not a runtime file of the right shape."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    pid, url, host, port = data.get("pid"), data.get("url"), data.get("host"), data.get("port")
    started, version, data_dir = data.get("started_at"), data.get("version"), data.get("data_dir")
    log_file, detached = data.get("log_file"), data.get("detached", False)
    if not (isinstance(pid, int) and not isinstance(pid, bool) and pid > 0):
        return None
    if not (isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536):
        return None
    if not all(isinstance(v, str) and v for v in (url, host, data_dir)) or not isinstance(version, str):
        return None
    if not isinstance(started, int | float) or isinstance(started, bool):
        return None
    if log_file is not None and not isinstance(log_file, str):
        return None
    assert isinstance(url, str) and isinstance(host, str) and isinstance(data_dir, str)
    return RuntimeInfo(pid, url, host, port, data_dir, float(started), version, detached is True, log_file)


class ServerLock:
    """The exclusive lock a server holds on its data directory while it runs."""

    def __init__(self, data_dir: pathlib.Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> bool:
        """Take the lock without waiting; False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def lock_held(data_dir: pathlib.Path) -> bool:
    """Whether a live server holds the data directory's lock (no lock file: no)."""
    try:
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock we may just have taken
    return False


def runtime_path(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / RUNTIME_FILE


def write_runtime(data_dir: pathlib.Path, info: RuntimeInfo) -> pathlib.Path:
    """Write atomically, mode 0600."""
    path = runtime_path(data_dir)
    tmp = path.with_name(f".{RUNTIME_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(info.to_json(), indent=2).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_runtime(data_dir: pathlib.Path) -> RuntimeInfo | None:
    """The runtime file's content, live or not (None: absent or unreadable)."""
    try:
        with runtime_path(data_dir).open("rb") as fh:
            raw = fh.read(MAX_RUNTIME_BYTES + 1)
    except OSError:
        return None
    return parse_runtime(raw) if len(raw) <= MAX_RUNTIME_BYTES else None


def remove_runtime(data_dir: pathlib.Path, pid: int) -> None:
    """Remove the runtime file if it is this process's."""
    info = read_runtime(data_dir)
    if info is not None and info.pid == pid:
        with contextlib.suppress(OSError):
            runtime_path(data_dir).unlink()


def running_server(data_dir: pathlib.Path) -> RuntimeInfo | None:
    """The server running from ``data_dir``: its runtime file, when a live server holds the lock."""
    if not lock_held(data_dir):
        return None
    return read_runtime(data_dir)


INSTANCE_FILE: Final = "instance_id"


def instance_id(data_dir: pathlib.Path) -> str:
    """This server instance's id in the shared database (``server_instances``), made once per data
    directory: a restart keeps it, and two instances never share one (each holds its own
    ``server.lock``). A copied data directory would share it: give each instance a fresh one."""
    path = data_dir / INSTANCE_FILE
    with contextlib.suppress(OSError, UnicodeDecodeError):
        found = path.read_text().strip()
        if found.startswith("inst_") and len(found) <= 64:
            return found
    data_dir.mkdir(parents=True, exist_ok=True)
    made = f"inst_{uuid.uuid4().hex}"
    tmp = path.with_name(f".{INSTANCE_FILE}.{os.getpid()}.tmp")
    tmp.write_text(made + "\n")
    os.replace(tmp, path)
    return made
