"""`tether attach` under tmux against a real server and a real bridge (`tether rc` + `tether agent`)."""

from __future__ import annotations

import os
import pathlib
import sys
from dataclasses import dataclass

from tests.support.bridge import BridgeProcess
from tests.support.server import ROOT, ServerProcess
from tests.support.tmux import TmuxTerminal

SCENARIO = """\
# replies of the scripted model for the attach tests (format: src/tether/agent/scenario.py)
reply after tool
text The Write tool answered: {tool_result}
more \\nAll done with the note.

reply when STREAMLONG
chunk 6
delay 0.12
text Streaming a **long** answer, so that its live preview shows in the status bar of attach while it is written.

reply when WAITLONG
text Working on it.
pause 25
more \\nFinished waiting.

reply when HELLO
text Hi there: {prompt} was received.

reply on prompt
text I'll write a note with the Write tool.
tool Write file_path=tether-note.txt content="Hello from attach.\\n"
"""


@dataclass
class Stack:
    server: ServerProcess
    bridge: BridgeProcess
    token: str
    project: pathlib.Path
    home: pathlib.Path


def scripted_agent(root: pathlib.Path) -> str:
    scenario = root / "scenario.txt"
    scenario.write_text(SCENARIO)
    return f"{sys.executable} -m tether.cli.main agent --backend scripted --scenario {scenario}"


def attach_env(server: ServerProcess, token: str, home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
    env.update(TETHER_HOME=str(home), TETHER_SERVER=server.url, TETHER_TOKEN=token, PYTHONPATH=str(ROOT / "src"))
    env.pop("NO_COLOR", None)
    return env


def attach(server: ServerProcess, token: str, home: pathlib.Path, *args: str) -> TmuxTerminal:
    """`tether attach ARGS…` in a fresh 120×40 terminal (started by `with`)."""
    argv = [sys.executable, "-m", "tether.cli.main", "attach", *args]
    return TmuxTerminal(argv, attach_env(server, token, home), cwd=str(ROOT))
