"""Run a real `tether remote-control --json` process and read its event lines."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.support.server import ROOT

CLAUDE_BIN = ROOT / ".tools" / "claude" / "node_modules" / ".bin" / "claude"
STUB_AGENT = ROOT / "tests" / "support" / "stub_agent.py"
SCRIPTED = "tether agent --backend scripted"

Event = dict[str, Any]


def claude_bin() -> pathlib.Path:
    """The stock CLI installed by scripts/install-test-deps (the tests fail, not skip, without it)."""
    if not os.access(CLAUDE_BIN, os.X_OK):
        raise RuntimeError(f"the stock claude CLI is not installed at {CLAUDE_BIN}; run scripts/install-test-deps")
    return CLAUDE_BIN


class BridgeProcess:
    """`tether rc --json …` in ``cwd`` with its own TETHER_HOME, logged in with ``token``."""

    def __init__(self, server_url: str, token: str, cwd: pathlib.Path, home: pathlib.Path, *args: str,
                 agent: str = SCRIPTED, env: dict[str, str] | None = None) -> None:
        self.server_url = server_url
        self.token = token
        self.cwd = cwd
        self.home = home
        self.args = args
        self.agent = agent
        self.extra_env = env or {}
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._changed = threading.Condition()
        self._threads: list[threading.Thread] = []

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "ANTHROPIC_", "CLAUDE_"))}
        env.update(TETHER_HOME=str(self.home), TETHER_SERVER=self.server_url, TETHER_TOKEN=self.token,
                   PYTHONUNBUFFERED="1", NO_COLOR="1")
        env.update(self.extra_env)
        return env

    def start(self) -> BridgeProcess:
        self.home.mkdir(parents=True, exist_ok=True)
        self.events = []
        argv = [sys.executable, "-m", "tether.cli.main", "rc", "--json", "--agent", self.agent, *self.args]
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._threads = [threading.Thread(target=self._read_out, args=(self.proc,), daemon=True),
                         threading.Thread(target=self._read_err, args=(self.proc,), daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def _read_out(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        with proc.stdout:  # closed at EOF: nothing left for the garbage collector
            for line in proc.stdout:
                try:
                    event = json.loads(line)
                except ValueError:
                    event = {"event": "unparsed", "message": line.rstrip()}
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    def _read_err(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        with proc.stderr:
            for line in proc.stderr:
                with self._changed:
                    self.stderr.append(line.rstrip())

    # ---- waiting ---------------------------------------------------------------------------------

    def wait_for(self, name: str, predicate: Callable[[Event], bool] | None = None, timeout: float = 30.0,
                 after: int = 0) -> Event:
        """The first event ``name`` (index ≥ ``after``) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events[after:]:
                    if event.get("event") == name and (predicate is None or predicate(event)):
                        return event
                if self.proc is not None and self.proc.poll() is not None and not self._alive_readers():
                    raise AssertionError(f"the bridge exited ({self.proc.returncode}) before {name!r}:\n"
                                         f"{self.describe()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {name!r}:\n{self.describe()}")
                self._changed.wait(min(left, 0.5))

    def _alive_readers(self) -> bool:
        return any(t.is_alive() for t in self._threads[:1])

    def all(self, name: str) -> list[Event]:
        with self._changed:
            return [e for e in self.events if e.get("event") == name]

    def describe(self) -> str:
        with self._changed:
            events = "\n".join(json.dumps(e)[:400] for e in self.events[-40:])
            err = "\n".join(self.stderr[-40:])
        return f"--- events ---\n{events}\n--- stderr ---\n{err}"

    @property
    def environment_id(self) -> str:
        return str(self.wait_for("registered")["environment_id"])

    # ---- stopping --------------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        for t in self._threads:
            t.join(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait(10)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.wait(10)

    def __enter__(self) -> BridgeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
