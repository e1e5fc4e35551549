"""The crash-recovery pointer (docs/protocol.md §11.6, §6).

``$TETHER_HOME/projects/<sanitised dir>/bridge-pointer.json`` holds
``{"sessionId", "environmentId", "source"}`` for the session a bridge runs in that
directory. Its **mtime** is its age: older than 4 h (the server forgets an environment that
has not polled for that long) it is stale, and reading it deletes it; so does invalid content.
The bridge writes it after creating the initial session, refreshes it hourly
(:func:`refresh_pointer`), and clears it on a clean shutdown; ``tether remote-control
--continue`` finds it with :func:`find_pointer`: this directory first, then the freshest
pointer among the repository's other git worktrees (at most 50).

Pure pieces (:func:`sanitise_path`, :func:`parse_pointer`, :func:`is_stale`) take no I/O;
the rest does small file operations and is synchronous, but for :func:`keep_pointer_fresh`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from tether.bridge.worktree import list_worktrees
from tether.client.credentials import tether_home
from tether.protocol.ids import is_valid_id

POINTER_FILE: Final = "bridge-pointer.json"
POINTER_TTL_S: Final = 4 * 3600.0
REFRESH_INTERVAL_S: Final = 3600.0
MAX_SANITISED_LENGTH: Final = 200
MAX_WORKTREE_SIBLINGS: Final = 50
MAX_POINTER_BYTES: Final = 64 * 1024

PointerSource = Literal["standalone", "repl"]
_NON_ALNUM: Final = re.compile(r"[^a-zA-Z0-9]")


# ---- pure ---------------------------------------------------------------------------------------

def sanitise_path(directory: str) -> str:
    """Every non-alphanumeric character becomes ``-``; names over 200 characters are cut to 200
    and get ``-<hash of the full path>`` so that long paths stay distinct."""
    name = _NON_ALNUM.sub("-", directory)
    if len(name) <= MAX_SANITISED_LENGTH:
        return name
    digest = hashlib.sha256(directory.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{name[:MAX_SANITISED_LENGTH]}-{digest}"


@dataclass(frozen=True)
class BridgePointer:
    session_id: str
    environment_id: str
    source: PointerSource = "standalone"

    def to_json(self) -> dict[str, str]:
        return {"sessionId": self.session_id, "environmentId": self.environment_id, "source": self.source}


def parse_pointer(raw: bytes | str) -> BridgePointer | None:
    """The pointer in ``raw``, or None when it is not valid JSON of the right shape."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict):
        return None
    session, env, source = data.get("sessionId"), data.get("environmentId"), data.get("source")
    if not is_valid_id(session) or not is_valid_id(env) or source not in ("standalone", "repl"):
        return None
    assert isinstance(session, str) and isinstance(env, str)
    return BridgePointer(session, env, "repl" if source == "repl" else "standalone")


def is_stale(mtime: float, now: float, ttl: float = POINTER_TTL_S) -> bool:
    """Older than ``ttl`` seconds (an mtime in the future, e.g. clock skew, counts as fresh)."""
    return now - mtime > ttl


def refresh_due(mtime: float, now: float, interval: float = REFRESH_INTERVAL_S) -> bool:
    return now - mtime >= interval


# ---- files --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FoundPointer:
    pointer: BridgePointer
    directory: pathlib.Path
    """The project directory the pointer belongs to (a worktree sibling, possibly)."""
    path: pathlib.Path
    age_s: float


def _home(home: pathlib.Path | None) -> pathlib.Path:
    return home if home is not None else tether_home()


def pointer_path(directory: pathlib.Path | str, home: pathlib.Path | None = None) -> pathlib.Path:
    real = os.path.realpath(directory)
    return _home(home) / "projects" / sanitise_path(real) / POINTER_FILE


def write_pointer(directory: pathlib.Path | str, pointer: BridgePointer,
                  home: pathlib.Path | None = None) -> pathlib.Path:
    """Write atomically (mode 0600); the mtime starts the 4 h clock."""
    path = pointer_path(directory, home)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{POINTER_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps(pointer.to_json()).encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path


def read_pointer(directory: pathlib.Path | str, home: pathlib.Path | None = None, *,
                 now: float | None = None, ttl: float = POINTER_TTL_S) -> FoundPointer | None:
    """The pointer of ``directory`` if it is fresh and valid; a stale or invalid one is deleted."""
    path = pointer_path(directory, home)
    return _read(path, pathlib.Path(os.path.realpath(directory)), time.time() if now is None else now, ttl)


def _read(path: pathlib.Path, directory: pathlib.Path, now: float, ttl: float) -> FoundPointer | None:
    try:
        mtime = path.stat().st_mtime
        if is_stale(mtime, now, ttl):
            path.unlink(missing_ok=True)
            return None
        with path.open("rb") as fh:
            raw = fh.read(MAX_POINTER_BYTES + 1)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None
    pointer = parse_pointer(raw) if len(raw) <= MAX_POINTER_BYTES else None
    if pointer is None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return None
    return FoundPointer(pointer, directory, path, max(0.0, now - mtime))


def refresh_pointer(directory: pathlib.Path | str, home: pathlib.Path | None = None, *,
                    now: float | None = None) -> bool:
    """Reset the pointer's age (mtime := now); False when there is no pointer."""
    path = pointer_path(directory, home)
    t = time.time() if now is None else now
    try:
        os.utime(path, (t, t))
        return True
    except FileNotFoundError:
        return False


async def keep_pointer_fresh(directory: pathlib.Path | str, home: pathlib.Path | None,
                             written: Callable[[], bool]) -> None:
    """Refresh the pointer every :data:`REFRESH_INTERVAL_S` while ``written()`` says this bridge
    wrote it (a bridge that runs for days keeps it younger than :data:`POINTER_TTL_S`)."""
    while True:
        await asyncio.sleep(REFRESH_INTERVAL_S)
        if written():
            refresh_pointer(directory, home)


def clear_pointer(directory: pathlib.Path | str, home: pathlib.Path | None = None) -> bool:
    """Delete the pointer; True when there was one."""
    path = pointer_path(directory, home)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    return True


def find_pointer(directory: pathlib.Path | str, home: pathlib.Path | None = None, *, now: float | None = None,
                 ttl: float = POINTER_TTL_S, max_siblings: int = MAX_WORKTREE_SIBLINGS) -> FoundPointer | None:
    """For ``--continue``: the pointer of ``directory``, else the freshest one among the git
    worktrees of its repository (the main checkout and its linked worktrees)."""
    t = time.time() if now is None else now
    here = read_pointer(directory, home, now=t, ttl=ttl)
    if here is not None:
        return here
    real = os.path.realpath(directory)
    best: FoundPointer | None = None
    for sibling in list_worktrees(pathlib.Path(real))[:max_siblings]:
        if os.path.realpath(sibling) == real:
            continue
        found = read_pointer(sibling, home, now=t, ttl=ttl)
        if found is not None and (best is None or found.age_s < best.age_s):
            best = found
    return best
