"""`tether attach` in a tmux terminal driving the STOCK `claude` CLI behind `tether rc`, offline: the
agent talks to the fake Messages API of tests/support/fake_anthropic.py (as in test_bridge_claude.py).

A prompt typed in attach is answered by claude; a Bash permission request from claude is shown as a
question in attach, answered there with `y`, and the tool runs."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.e2e.attach_helpers import attach
from tests.e2e.bridge_helpers import Api, in_thread, open_api
from tests.support.bridge import BridgeProcess, claude_bin
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def claude_bridge(server: ServerProcess, owner_token: str,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BridgeProcess, pathlib.Path]]:
    root = tmp_path_factory.mktemp("attach-claude")
    project, home, user_home = root / "project", root / "bridge-home", root / "home"
    for d in (project, home, user_home):
        d.mkdir()
    with FakeAnthropic() as fake:
        env = {"HOME": str(user_home), "ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "dummy",
               "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_TELEMETRY": "1"}
        bridge = BridgeProcess(server.url, owner_token, project, home, "--no-create-session-in-dir",
                               agent=str(claude_bin()), env=env).start()
        try:
            bridge.wait_for("registered")
            yield bridge, project
        finally:
            assert bridge.stop() == 0


async def test_attach_drives_the_stock_claude(claude_bridge: tuple[BridgeProcess, pathlib.Path],
                                              server: ServerProcess, owner_token: str,
                                              tmp_path: pathlib.Path) -> None:
    bridge, project = claude_bridge
    async with open_api(server, owner_token) as client:
        api = Api(server, owner_token, client)
        sid = await api.create_session(bridge.environment_id, title="claude via attach")
        await in_thread(bridge.wait_for, "session_started", lambda e: e["session_id"].endswith(sid[-26:]))
        try:
            with attach(server, owner_token, tmp_path, "claude via") as term:
                term.wait_for("Connected; live.")
                term.line("hello")
                term.wait_for("Hello from the fake model.", timeout=90)
                term.wait_for(lambda s: " · idle · live" in s, everything=False, timeout=60)

                term.line("TOOLBASH please")
                term.wait_for("Permission: allow Bash?", timeout=90)
                term.wait_for("touch from_bash.txt && echo hi")
                term.line("y")
                term.wait_for("✓ Allowed Bash")
                out = term.wait_for("Tool said: TOOL_RESULT:hi", timeout=90)
                assert out.count("Hello from the fake model.") == 1
            assert (project / "from_bash.txt").exists()
        finally:
            await api.archive(sid)
