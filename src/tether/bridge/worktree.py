"""Git worktrees for the bridge's ``--spawn worktree`` mode (docs/protocol.md §11.3, §6).

Each session gets ``<git root>/.tether/worktrees/bridge-<id>`` on its own branch
``tether-bridge-<id>`` (started from ``HEAD``); :func:`remove_worktree` removes the worktree
with ``git worktree remove --force`` and deletes the branch with ``git branch -D``, as the
reference does. ``/.tether/`` is added to the repository's ``info/exclude`` so the worktrees
never show up as untracked files. Everything runs the real ``git`` (no shell), with a deadline.

:func:`list_worktrees` (synchronous) lists a repository's worktree directories; the
crash-recovery pointer uses it to look across sibling worktrees for ``--continue``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
from dataclasses import dataclass
from typing import Final

from tether.errors import TetherError
from tether.protocol.ids import is_valid_id

WORKTREES_DIR: Final = pathlib.PurePosixPath(".tether", "worktrees")
EXCLUDE_LINE: Final = "/.tether/"
GIT_TIMEOUT_S: Final = 60.0
MAX_ID_LENGTH: Final = 100


class WorktreeError(TetherError):
    """A worktree could not be created or removed (the message carries git's own words)."""

    status = 500
    error_type = "worktree_error"


@dataclass(frozen=True)
class Worktree:
    path: pathlib.Path
    branch: str
    repo_root: pathlib.Path
    session_id: str
    reused: bool = False
    """True when the worktree (or its branch) already existed, e.g. after a crash."""


def safe_id(session_id: str) -> str:
    """The id as it appears in directory and branch names (ids are already path-safe)."""
    if not is_valid_id(session_id) or len(session_id) > MAX_ID_LENGTH or session_id.startswith("-"):
        raise WorktreeError(f"Refusing a worktree for the invalid id {session_id!r}.", status=400)
    return session_id


def worktree_name(session_id: str) -> str:
    return f"bridge-{safe_id(session_id)}"


def branch_name(session_id: str) -> str:
    return f"tether-bridge-{safe_id(session_id)}"


def worktree_path(repo_root: pathlib.Path, session_id: str) -> pathlib.Path:
    return repo_root.joinpath(*WORKTREES_DIR.parts, worktree_name(session_id))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANG="C")
    return env


@dataclass(frozen=True)
class _Result:
    code: int
    out: str
    err: str


async def _git(cwd: pathlib.Path, *args: str, timeout: float = GIT_TIMEOUT_S) -> _Result:
    try:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=cwd, env=_env(), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise WorktreeError("`git` is not installed or not on PATH.") from None
    except NotADirectoryError:
        raise WorktreeError(f"{cwd} is not a directory.", status=400) from None
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except BaseException as exc:  # timeout or cancellation: never leave git running
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())
        if isinstance(exc, TimeoutError):
            raise WorktreeError(f"git {' '.join(args)} did not finish within {timeout:g} s.") from None
        raise
    assert proc.returncode is not None
    return _Result(proc.returncode, out.decode(errors="replace").strip(), err.decode(errors="replace").strip())


def _git_sync(cwd: pathlib.Path, *args: str, timeout: float = GIT_TIMEOUT_S) -> _Result:
    try:
        done = subprocess.run(["git", *args], cwd=cwd, env=_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
    except (FileNotFoundError, NotADirectoryError):
        return _Result(127, "", "git or the directory is missing")
    except subprocess.TimeoutExpired:
        return _Result(124, "", f"git {' '.join(args)} timed out")
    return _Result(done.returncode, done.stdout.decode(errors="replace").strip(),
                   done.stderr.decode(errors="replace").strip())


async def git_root(directory: pathlib.Path) -> pathlib.Path | None:
    """The top of the working tree that contains ``directory``, or None outside git."""
    if not _is_dir(directory):
        return None
    res = await _git(directory, "rev-parse", "--show-toplevel")
    return pathlib.Path(res.out) if res.code == 0 and res.out else None


def list_worktrees(directory: pathlib.Path) -> list[pathlib.Path]:
    """Every worktree of the repository containing ``directory`` (main first); [] outside git."""
    res = _git_sync(directory, "worktree", "list", "--porcelain")
    if res.code != 0:
        return []
    return [pathlib.Path(line[len("worktree "):]) for line in res.out.splitlines() if line.startswith("worktree ")]


async def _branch_exists(root: pathlib.Path, branch: str) -> bool:
    return (await _git(root, "rev-parse", "--verify", "--quiet", f"refs/heads/{branch}")).code == 0


async def _registered(root: pathlib.Path, path: pathlib.Path) -> bool:
    res = await _git(root, "worktree", "list", "--porcelain")
    return _listed(res.out, path)


def _listed(porcelain: str, path: pathlib.Path) -> bool:
    target = os.path.realpath(path)
    return any(os.path.realpath(line[len("worktree "):]) == target
               for line in porcelain.splitlines() if line.startswith("worktree "))


def _last_lines(text: str, n: int = 3) -> str:
    return " ".join(text.splitlines()[-n:])


def _is_dir(path: pathlib.Path) -> bool:
    return path.is_dir()


async def _ensure_excluded(root: pathlib.Path) -> None:
    res = await _git(root, "rev-parse", "--git-common-dir")
    if res.code != 0 or not res.out:
        return
    common = pathlib.Path(res.out)
    exclude = (common if common.is_absolute() else root / common) / "info" / "exclude"
    try:
        lines = exclude.read_text().splitlines() if exclude.exists() else []
        if EXCLUDE_LINE in (line.strip() for line in lines):
            return
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a") as fh:
            if lines and lines[-1] != "":
                fh.write("\n")
            fh.write(f"# bridge worktrees of `tether remote-control`\n{EXCLUDE_LINE}\n")
    except OSError:
        pass  # cosmetic: the worktrees still work


async def create_worktree(directory: pathlib.Path, session_id: str, *, base: str = "HEAD") -> Worktree:
    """Create (or re-use, after a crash) the session's worktree and branch."""
    root = await git_root(directory)
    if root is None:
        raise WorktreeError(f"{directory} is not inside a git repository; worktree mode needs one.", status=400)
    path = worktree_path(root, session_id)
    branch = branch_name(session_id)
    await _ensure_excluded(root)
    if await _registered(root, path):
        if path.is_dir():
            return Worktree(path, branch, root, session_id, reused=True)
        await _git(root, "worktree", "prune")
    if path.exists() and any(path.iterdir()):
        raise WorktreeError(f"{path} exists and is not a worktree of {root}; remove it and try again.")
    reused = await _branch_exists(root, branch)
    if not reused and (await _git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")).code != 0:
        what = "the repository has no commits yet" if base == "HEAD" else f"{base!r} is not a commit"
        raise WorktreeError(f"Cannot create a worktree in {root}: {what}.", status=400)
    path.parent.mkdir(parents=True, exist_ok=True)
    if reused:  # a crashed session's branch: keep its commits
        res = await _git(root, "worktree", "add", str(path), branch)
    else:
        res = await _git(root, "worktree", "add", "-b", branch, str(path), base)
    if res.code != 0:
        _drop_empty_parents(path)
        raise WorktreeError(f"git worktree add failed: {_last_lines(res.err or res.out)}")
    return Worktree(path, branch, root, session_id, reused=reused)


async def remove_worktree(worktree: Worktree, *, delete_branch: bool = True) -> None:
    """Remove the worktree (even with local changes) and, by default, delete its branch.
    Idempotent: a worktree or branch that is already gone is not an error."""
    root = worktree.repo_root
    res = await _git(root, "worktree", "remove", "--force", str(worktree.path))
    if res.code != 0:
        await _git(root, "worktree", "prune")
        if await _registered(root, worktree.path):
            raise WorktreeError(f"git worktree remove failed: {res.err or res.out}")
        if worktree.path.exists():
            raise WorktreeError(f"{worktree.path} is still there after `git worktree remove`: {res.err}")
    if delete_branch and await _branch_exists(root, worktree.branch):
        res = await _git(root, "branch", "-D", worktree.branch)
        if res.code != 0:
            raise WorktreeError(f"git branch -D {worktree.branch} failed: {res.err or res.out}")
    _drop_empty_parents(worktree.path)


def _drop_empty_parents(path: pathlib.Path) -> None:
    """Remove ``.tether/worktrees`` (and ``.tether``) when nothing else lives there."""
    for parent in (path.parent, path.parent.parent):
        with contextlib.suppress(OSError):
            parent.rmdir()
