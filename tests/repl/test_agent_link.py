"""How the REPL runs its agent: `tether agent` in this process when it can, a subprocess otherwise;
and control requests to the agent answered in order (the in-process agent, scripted backend)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from tests.support.waiting import eventually
from tether.agent.inprocess import InProcessAgent
from tether.bridge.agent_process import AgentProcess
from tether.bridge.spawner import TETHER_AGENT, AgentChoice
from tether.protocol.messages import user_message
from tether.repl.agent_link import AgentLink, AgentRequestFailed, InProcessArgs, in_process_args, make_agent

pytestmark = pytest.mark.anyio


def choice(*words: str, kind: str = "tether") -> AgentChoice:
    return AgentChoice((*TETHER_AGENT, *words) if kind == "tether" else tuple(words), kind, "x")


def test_which_agents_run_in_process() -> None:
    assert in_process_args(choice()) == InProcessArgs()
    assert in_process_args(choice("--backend", "scripted", "--scenario", "s.txt", "--model", "m")) == InProcessArgs(
        "scripted", "s.txt", "m", None)
    assert in_process_args(choice("--allowedTools", "Bash")) is None  # needs the real command line
    assert in_process_args(choice("/usr/bin/claude", kind="claude")) is None


def test_make_agent(tmp_path: pathlib.Path) -> None:
    handle, what = make_agent(choice("--backend", "scripted"), str(tmp_path), permission_mode=None, model=None)
    assert isinstance(handle, InProcessAgent) and what == "tether agent, in process (the offline scripted model)"
    handle, _ = make_agent(choice("/bin/cat", kind="custom"), str(tmp_path), permission_mode="plan", model=None)
    assert isinstance(handle, AgentProcess) and "--permission-mode" in handle.spec.argv()
    with pytest.raises(ValueError, match="scenario"):
        make_agent(choice("--backend", "scripted", "--scenario", str(tmp_path / "missing")), str(tmp_path),
                   permission_mode=None, model=None)


async def test_requests_and_messages_of_the_in_process_agent(tmp_path: pathlib.Path) -> None:
    (tmp_path / "s.txt").write_text("reply on prompt\ntext Hi: {prompt}\n")
    seen: list[dict[str, Any]] = []
    link = AgentLink(lambda: make_agent(choice("--scenario", str(tmp_path / "s.txt")), str(tmp_path),
                                        permission_mode=None, model=None)[0], seen.append)
    await link.start()
    try:
        assert (await link.request("set_model", model="haiku")) == {"model": "claude-haiku-4-5"}
        with pytest.raises(AgentRequestFailed, match="cannot write titles"):
            await link.request("generate_session_title", description="x")
        assert await link.send(user_message("hello", "u1"))
        await eventually(lambda: any(m.get("type") == "result" for m in seen), 10, message="the result")
        assert [m["type"] for m in seen if m["type"] in ("user", "assistant", "result")] == ["user", "assistant",
                                                                                             "result"]
        assert not any(m.get("type") == "control_response" for m in seen)  # answers went to their waiters
        await link.restart()
        assert link.running and link.restarts == 1
    finally:
        await link.stop()
    assert not link.running
