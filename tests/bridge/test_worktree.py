"""Bridge worktrees with the real `git` in temporary repositories (docs/protocol.md §11.3, §6)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from tether.bridge.worktree import (
    WorktreeError,
    branch_name,
    create_worktree,
    git_root,
    list_worktrees,
    remove_worktree,
    worktree_name,
    worktree_path,
)

pytestmark = pytest.mark.anyio

SESSION = "session_01jz3k6d2x9q8w7e6r5t4y3u2i"


def git(cwd: pathlib.Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    done = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


def branches(repo: pathlib.Path) -> list[str]:
    return git(repo, "branch", "--format=%(refname:short)").splitlines()


@pytest.fixture
def repo(tmp_path: pathlib.Path) -> pathlib.Path:
    root = tmp_path / "project"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    (root / "README.md").write_text("hello\n")
    (root / "src").mkdir()
    git(root, "add", ".")
    git(root, "commit", "-q", "-m", "initial")
    return root


def test_names() -> None:
    assert worktree_name(SESSION) == f"bridge-{SESSION}"
    assert branch_name(SESSION) == f"tether-bridge-{SESSION}"
    assert worktree_path(pathlib.Path("/r"), SESSION) == pathlib.Path(f"/r/.tether/worktrees/bridge-{SESSION}")
    for bad in ("", "../x", "a/b", "-rf", "x y", "a" * 101):
        with pytest.raises(WorktreeError):
            branch_name(bad)


async def test_create_and_remove(repo: pathlib.Path) -> None:
    wt = await create_worktree(repo / "src", SESSION)  # from a subdirectory: the git root is used
    assert wt.repo_root == repo and not wt.reused
    assert wt.path == repo / ".tether" / "worktrees" / f"bridge-{SESSION}"
    assert (wt.path / "README.md").read_text() == "hello\n"
    assert git(wt.path, "rev-parse", "--abbrev-ref", "HEAD") == wt.branch
    assert git(wt.path, "rev-parse", "HEAD") == git(repo, "rev-parse", "HEAD")
    assert wt.branch in branches(repo)
    assert wt.path in list_worktrees(repo) and list_worktrees(repo)[0] == repo
    assert git(repo, "status", "--porcelain") == ""  # .tether/ is excluded, not untracked
    exclude = pathlib.Path(git(repo, "rev-parse", "--git-common-dir"))
    assert "/.tether/" in (repo / exclude / "info" / "exclude").read_text().splitlines()

    # the session leaves changes behind: removal is forced, the branch is deleted
    (wt.path / "README.md").write_text("changed\n")
    (wt.path / "new.txt").write_text("untracked\n")
    await remove_worktree(wt)
    assert not wt.path.exists() and not (repo / ".tether").exists()
    assert wt.branch not in branches(repo)
    assert list_worktrees(repo) == [repo]
    await remove_worktree(wt)  # idempotent


async def test_exclude_is_written_once(repo: pathlib.Path) -> None:
    one = await create_worktree(repo, SESSION)
    two = await create_worktree(repo, "session_second")
    exclude = repo / ".git" / "info" / "exclude"
    assert exclude.read_text().count("/.tether/") == 1
    await remove_worktree(one)
    assert (repo / ".tether" / "worktrees").is_dir()  # still holds the other worktree
    await remove_worktree(two)
    assert not (repo / ".tether").exists()


async def test_existing_worktree_is_reused(repo: pathlib.Path) -> None:
    first = await create_worktree(repo, SESSION)
    again = await create_worktree(repo, SESSION)
    assert again.reused and again.path == first.path and again.branch == first.branch
    await remove_worktree(again)


async def test_leftover_branch_keeps_its_commits(repo: pathlib.Path) -> None:
    """After a crash the branch may outlive its worktree: re-creating checks it out again."""
    wt = await create_worktree(repo, SESSION)
    (wt.path / "work.txt").write_text("progress\n")
    git(wt.path, "add", "work.txt")
    git(wt.path, "commit", "-q", "-m", "session work")
    commit = git(wt.path, "rev-parse", "HEAD")
    await remove_worktree(wt, delete_branch=False)
    assert wt.branch in branches(repo)

    again = await create_worktree(repo, SESSION)
    assert again.reused and (again.path / "work.txt").read_text() == "progress\n"
    assert git(again.path, "rev-parse", "HEAD") == commit
    await remove_worktree(again)
    assert again.branch not in branches(repo)


async def test_worktree_deleted_by_hand(repo: pathlib.Path) -> None:
    wt = await create_worktree(repo, SESSION)
    shutil.rmtree(wt.path)
    await remove_worktree(wt)  # prunes the stale registration, deletes the branch
    assert list_worktrees(repo) == [repo] and wt.branch not in branches(repo)
    recreated = await create_worktree(repo, SESSION)
    assert (recreated.path / "README.md").exists()
    await remove_worktree(recreated)


async def test_a_foreign_directory_in_the_way(repo: pathlib.Path) -> None:
    path = worktree_path(repo, SESSION)
    path.mkdir(parents=True)
    (path / "keep.txt").write_text("not ours")
    with pytest.raises(WorktreeError, match="not a worktree"):
        await create_worktree(repo, SESSION)
    assert (path / "keep.txt").exists()


async def test_not_a_repository(tmp_path: pathlib.Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    assert await git_root(plain) is None
    assert await git_root(tmp_path / "missing") is None
    assert list_worktrees(plain) == []
    with pytest.raises(WorktreeError, match="not inside a git repository") as err:
        await create_worktree(plain, SESSION)
    assert err.value.status == 400


async def test_repository_without_commits(tmp_path: pathlib.Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q", "-b", "main")
    with pytest.raises(WorktreeError, match="no commits"):
        await create_worktree(empty, SESSION)
    assert not (empty / ".tether").exists()


async def test_invalid_session_id(repo: pathlib.Path) -> None:
    with pytest.raises(WorktreeError, match="invalid id"):
        await create_worktree(repo, "../../etc")
    assert not (repo / ".tether").exists()
