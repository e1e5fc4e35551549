"""A real `tether runner --json` process, and what its tests feed it: a local bare repository and
a scenario for the scripted `tether agent` whose one tool call is a Bash command."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import threading

from tests.support.bridge import SCRIPTED, BridgeProcess


def _git(cwd: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def bare_repo(root: pathlib.Path, text: str) -> pathlib.Path:
    src = root / "src"
    src.mkdir(parents=True)
    _git(src, "init", "-q", "-b", "main")
    (src / "hello.txt").write_text(text)
    _git(src, "add", ".")
    _git(src, "commit", "-qm", "init")
    _git(root, "clone", "-q", "--bare", "src", "app.git")
    return root / "app.git"


def scenario(path: pathlib.Path, command: str, after: str = "Tool said: {tool_result}") -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"reply after tool\ntext {after}\n\nreply on prompt\ntool Bash command={json.dumps(command)} "
                    "timeout:=600000\n")
    return path


def scripted_agent(scenario_path: pathlib.Path) -> str:
    return f"{SCRIPTED} --scenario {scenario_path} --permission-mode bypassPermissions"


class RunnerProcess(BridgeProcess):
    """`tether runner --json …` (the bridge helper's event reading, another command line)."""

    def start(self) -> RunnerProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "tether.cli.main", "runner", "--json", "--agent", self.agent, *self.args]
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._threads = [threading.Thread(target=self._read_out, args=(self.proc,), daemon=True),
                         threading.Thread(target=self._read_err, args=(self.proc,), daemon=True)]
        for t in self._threads:
            t.start()
        return self
