"""The crash-recovery pointer (docs/protocol.md §11.6): the pure rules, the file under a temporary
TETHER_HOME, and `--continue` lookup across real git worktrees."""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.bridge.pointer import (
    MAX_SANITISED_LENGTH,
    POINTER_TTL_S,
    BridgePointer,
    clear_pointer,
    find_pointer,
    is_stale,
    parse_pointer,
    pointer_path,
    read_pointer,
    refresh_due,
    refresh_pointer,
    sanitise_path,
    write_pointer,
)

POINTER = BridgePointer("session_01jz3k6d2x9q8w7e6r5t4y3u2i", "env_01jz3k6d2x9q8w7e6r5t4y3u2j")
HOUR = 3600.0


# ---- pure -----------------------------------------------------------------------------------------


def test_sanitise_path() -> None:
    assert sanitise_path("/home/me/my project.v2") == "-home-me-my-project-v2"
    assert sanitise_path("C:\\Users\\me") == "C--Users-me"
    assert sanitise_path("/srv/проект") == "-srv-------"


def test_long_paths_are_cut_and_stay_distinct() -> None:
    a = "/x" * 150 + "/a"
    b = "/x" * 150 + "/b"
    sa, sb = sanitise_path(a), sanitise_path(b)
    assert sa != sb and sa[:MAX_SANITISED_LENGTH] == sb[:MAX_SANITISED_LENGTH]
    assert len(sa) == MAX_SANITISED_LENGTH + 13 and sanitise_path(a) == sa  # deterministic


@given(st.text(max_size=400))
@settings(deadline=None)
def test_sanitised_names_are_safe(path: str) -> None:
    name = sanitise_path(path)
    assert all(c.isascii() and (c.isalnum() or c == "-") for c in name)
    assert len(name) <= MAX_SANITISED_LENGTH + 13


def test_parse_pointer() -> None:
    raw = json.dumps(POINTER.to_json())
    assert json.loads(raw) == {"sessionId": POINTER.session_id, "environmentId": POINTER.environment_id,
                               "source": "standalone"}
    assert parse_pointer(raw) == POINTER
    assert parse_pointer(raw.encode()) == POINTER
    repl = {"sessionId": "session_x", "environmentId": "env_y", "source": "repl", "extra": 1}
    assert parse_pointer(json.dumps(repl)) == BridgePointer("session_x", "env_y", "repl")
    for bad in ("", "{", "[]", "null", b"\xff\xfe",
                json.dumps({"sessionId": "s", "environmentId": "e"}),
                json.dumps({"sessionId": "s", "environmentId": "e", "source": "cloud"}),
                json.dumps({"sessionId": "../s", "environmentId": "e", "source": "repl"}),
                json.dumps({"sessionId": "s", "environmentId": 5, "source": "repl"})):
        assert parse_pointer(bad) is None


def test_ttl_rules() -> None:
    assert POINTER_TTL_S == 4 * HOUR
    assert not is_stale(mtime=1000.0, now=1000.0 + 4 * HOUR)
    assert is_stale(mtime=1000.0, now=1000.0 + 4 * HOUR + 1)
    assert not is_stale(mtime=5000.0, now=1000.0)  # clock skew: a future mtime is fresh
    assert not refresh_due(1000.0, 1000.0 + HOUR - 1) and refresh_due(1000.0, 1000.0 + HOUR)


# ---- the file -------------------------------------------------------------------------------------


def test_write_read_refresh_clear(tmp_path: pathlib.Path) -> None:
    home, project = tmp_path / "home", tmp_path / "project"
    project.mkdir()
    path = write_pointer(project, POINTER, home)
    assert path == home / "projects" / sanitise_path(str(project.resolve())) / "bridge-pointer.json"
    assert path == pointer_path(project, home)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = read_pointer(project, home)
    assert found is not None and found.pointer == POINTER and found.directory == project.resolve()
    assert found.path == path and 0 <= found.age_s < 60

    t = time.time()
    assert read_pointer(project, home, now=t + 3 * HOUR) is not None  # 3 h old: fine
    assert refresh_pointer(project, home, now=t + 3 * HOUR)  # hourly refresh resets the clock...
    assert path.stat().st_mtime == pytest.approx(t + 3 * HOUR)
    again = read_pointer(project, home, now=t + 6 * HOUR)  # ...so 6 h after writing it is 3 h old
    assert again is not None and again.age_s == pytest.approx(3 * HOUR)

    assert clear_pointer(project, home) and not path.exists() and not path.parent.exists()
    assert not clear_pointer(project, home)
    assert read_pointer(project, home) is None
    assert not refresh_pointer(project, home)


def test_stale_pointer_is_deleted(tmp_path: pathlib.Path) -> None:
    path = write_pointer(tmp_path, POINTER, tmp_path / "home")
    old = time.time() - 4 * HOUR - 5
    os.utime(path, (old, old))
    assert read_pointer(tmp_path, tmp_path / "home") is None
    assert not path.exists()


def test_invalid_pointer_is_deleted(tmp_path: pathlib.Path) -> None:
    path = write_pointer(tmp_path, POINTER, tmp_path / "home")
    path.write_text('{"sessionId": 1}')
    assert read_pointer(tmp_path, tmp_path / "home") is None and not path.exists()
    write_pointer(tmp_path, POINTER, tmp_path / "home")
    path.write_bytes(b" " * 70_000)  # oversized
    assert read_pointer(tmp_path, tmp_path / "home") is None and not path.exists()


def test_symlinked_directory_shares_the_pointer(tmp_path: pathlib.Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    write_pointer(link, POINTER, tmp_path / "home")
    found = read_pointer(real, tmp_path / "home")
    assert found is not None and found.pointer == POINTER


def test_default_home_is_tether_home(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TETHER_HOME", str(tmp_path / "th"))
    path = write_pointer(tmp_path, POINTER)
    assert path.is_relative_to(tmp_path / "th" / "projects")


# ---- --continue across git worktrees -------------------------------------------------------------


def git(cwd: pathlib.Path, *args: str) -> None:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@x", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@x", GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1")
    subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, check=True, timeout=30)


@pytest.fixture
def worktrees(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    main = tmp_path / "main"
    main.mkdir()
    git(main, "init", "-q", "-b", "main")
    (main / "f").write_text("x")
    git(main, "add", "f")
    git(main, "commit", "-q", "-m", "c")
    a, b = tmp_path / "wt-a", tmp_path / "wt-b"
    git(main, "worktree", "add", "-q", "-b", "a", str(a))
    git(main, "worktree", "add", "-q", "-b", "b", str(b))
    return main, a, b


def aged(directory: pathlib.Path, pointer: BridgePointer, home: pathlib.Path, age: float) -> None:
    path = write_pointer(directory, pointer, home)
    t = time.time() - age
    os.utime(path, (t, t))


def test_continue_prefers_this_directory(tmp_path: pathlib.Path,
                                         worktrees: tuple[pathlib.Path, pathlib.Path, pathlib.Path]) -> None:
    main, a, _ = worktrees
    home = tmp_path / "home"
    aged(a, BridgePointer("session_a", "env_a"), home, 60)
    aged(main, BridgePointer("session_main", "env_main"), home, 2 * HOUR)
    found = find_pointer(main, home)
    assert found is not None and found.pointer.session_id == "session_main" and found.directory == main.resolve()


def test_continue_picks_the_freshest_sibling(tmp_path: pathlib.Path,
                                             worktrees: tuple[pathlib.Path, pathlib.Path, pathlib.Path]) -> None:
    main, a, b = worktrees
    home = tmp_path / "home"
    aged(a, BridgePointer("session_a", "env_a"), home, 2 * HOUR)
    aged(b, BridgePointer("session_b", "env_b"), home, 1 * HOUR)
    found = find_pointer(main, home)
    assert found is not None and found.pointer.session_id == "session_b" and found.directory == b.resolve()
    found_from_a = find_pointer(a, home)  # a's own pointer wins in a
    assert found_from_a is not None and found_from_a.pointer.session_id == "session_a"
    # from a subdirectory of the main checkout (no pointer of its own), siblings are still searched
    sub = main / "sub"
    sub.mkdir()
    found_from_sub = find_pointer(sub, home)
    assert found_from_sub is not None and found_from_sub.pointer.session_id == "session_b"


def test_continue_ignores_stale_siblings(tmp_path: pathlib.Path,
                                         worktrees: tuple[pathlib.Path, pathlib.Path, pathlib.Path]) -> None:
    main, a, b = worktrees
    home = tmp_path / "home"
    aged(a, BridgePointer("session_a", "env_a"), home, 5 * HOUR)
    assert find_pointer(main, home) is None
    assert not pointer_path(a, home).exists()  # deleted on the way
    aged(b, BridgePointer("session_b", "env_b"), home, HOUR)
    assert find_pointer(main, home) is not None
    assert find_pointer(main, home, max_siblings=1) is None  # only the main checkout is looked at


def test_continue_outside_git(tmp_path: pathlib.Path) -> None:
    assert find_pointer(tmp_path, tmp_path / "home") is None
    write_pointer(tmp_path, POINTER, tmp_path / "home")
    found = find_pointer(tmp_path, tmp_path / "home")
    assert found is not None and found.pointer == POINTER
