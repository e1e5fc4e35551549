"""Fixtures: real ``tether agent`` processes in throwaway folders, and the fake Messages API."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterator, Sequence

import pytest

from tests.agent.harness import STREAM_ARGS, AgentProc, clean_env
from tests.support.fake_anthropic import FakeAnthropic

SpawnAgent = Callable[..., AgentProc]


@pytest.fixture
def workdir(tmp_path: pathlib.Path) -> pathlib.Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def spawn_agent(tmp_path: pathlib.Path, workdir: pathlib.Path) -> Iterator[SpawnAgent]:
    """``spawn_agent(*extra_args, scenario=TEXT, args=STREAM_ARGS, env={...})`` → a running agent."""
    procs: list[AgentProc] = []
    home = tmp_path / "home"
    home.mkdir()

    def spawn(*extra: str, scenario: str | None = None, args: Sequence[str] = STREAM_ARGS,
              env: dict[str, str] | None = None, backend: str | None = "scripted") -> AgentProc:
        argv = list(args) + list(extra)
        if backend is not None:
            argv += ["--backend", backend]
        if scenario is not None:
            path = tmp_path / f"scenario{len(procs)}.txt"
            path.write_text(scenario)
            argv += ["--scenario", str(path)]
        proc = AgentProc(argv, workdir, clean_env(home, env))
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        proc.kill()


@pytest.fixture
def fake_api() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as api:
        yield api
