"""What the browser tests drive: a real `tether server`, and a small bridge that registers a
machine, long-polls for work and runs one SessionHost (HybridTransport + `tether agent
--backend scripted`) per session, in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import shutil
import subprocess
import sys
import threading
from typing import Any

import httpx

from tests.support.server import ROOT
from tests.support.worker import auth, register
from tether.bridge.agent_process import AgentSpec
from tether.bridge.attachments import AttachmentFetcher
from tether.bridge.session_host import HostConfig, SessionHost
from tether.client.hybrid import HybridConfig, HybridTransport
from tether.protocol.backoff import Backoff
from tether.protocol.work_secret import decode_work_secret

FAST = HybridConfig(
    ping_interval=0.5,
    reconnect_backoff=lambda: Backoff(0.1, 0.5, 0.25, 600.0, 60.0),
    post_backoff=lambda: Backoff(0.05, 0.5, additive_jitter=0.05),
)

# The scripted model (format: tether/agent/scenario.py). Keywords pick a reply.
SCENARIO = r"""
reply after tool
text "The tool answered: {tool_result}"

reply when PERMIT
text I'll write the note.
tool Write file_path=note.txt content="hello from the browser test\n"

reply when LONGRUN
text Starting a long command.
tool Bash command="sleep 60" description="Sleep for a minute"

reply when ECHO
text "You said: {prompt}"

reply when LONGCODE
text This needs a long command.
tool Bash command="for f in $(git ls-files -- 'src/**/*.py' 'tests/**/*.py'); do python -m pyflakes --max-complexity 12 --select E,F,W,C90 '$f' | tee -a /tmp/lint-report-with-a-rather-long-name.txt; done && grep -c . /tmp/lint-report-with-a-rather-long-name.txt\nsort /tmp/lint-report-with-a-rather-long-name.txt | uniq -c | sort -rn | head -n 40 > /tmp/lint-summary-sorted-by-count.txt" description="Lint every Python file and count the findings"

reply when SLOWTEXT
chunk 4
delay 0.05
text "Line one of a slowly streamed answer that keeps going for a while, so that a restart lands in the middle of it.\nLine two repeats the idea with a few more words, slowly, chunk by chunk, delta by delta.\nLine three is the end: FINAL-MARKER."

reply
chunk 8
delay 0.01
text "Here is **bold** text and a list:\n\n- one\n- two\n\n```python\ndef greet(name):\n    return f\"hi {name}\"\n```\n\nSTREAMED-ANSWER-END"
"""


class Bridge:
    """A test bridge: one environment, a SessionHost per dispatched session."""

    def __init__(self, server_url: str, token: str, workdir: pathlib.Path, scenario: str = SCENARIO) -> None:
        self.server_url = server_url
        self.token = token
        self.workdir = workdir
        self.scenario_path = workdir / "scenario.txt"
        self.scenario_path.parent.mkdir(parents=True, exist_ok=True)
        self.scenario_path.write_text(scenario)
        self.env: dict[str, Any] = {}
        self.hosts: dict[str, SessionHost] = {}
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="test-bridge", daemon=True)

    @property
    def env_id(self) -> str:
        return str(self.env["environment_id"])

    def start(self) -> Bridge:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise RuntimeError(f"the test bridge did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(40)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported by start() / visible in the test log
            self._error = exc
            self._ready.set()

    def agent_spec(self) -> AgentSpec:
        cmd = [sys.executable, "-m", "tether.cli.main", "agent", "--backend", "scripted",
               "--scenario", str(self.scenario_path)]
        return AgentSpec(cmd, cwd=str(self.workdir), include_partial_messages=True)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=self.server_url, timeout=15) as client:
            self.env = await register(client, self.token, machine_name="test-laptop", directory=str(self.workdir),
                                      branch="main", max_sessions=20)
            self._ready.set()
            tasks: set[asyncio.Task[Any]] = set()
            poller = asyncio.create_task(self._poll_loop(client, tasks))
            await self._stop.wait()
            poller.cancel()
            for host in self.hosts.values():
                host.stop()
            if tasks:
                await asyncio.wait(tasks, timeout=30)
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    async def _poll_loop(self, client: httpx.AsyncClient, tasks: set[asyncio.Task[Any]]) -> None:
        env_id, secret = self.env["environment_id"], self.env["environment_secret"]
        failures = 0
        while True:
            try:
                r = await client.get(f"/v1/environments/{env_id}/work/poll", headers=auth(secret), timeout=15)
                r.raise_for_status()
                item = r.json()
                failures = 0
            except httpx.HTTPError:
                failures += 1  # the server is restarting: back off a little, then poll again
                await asyncio.sleep(min(1.0, 0.1 * failures))
                continue
            if not item:
                continue
            token = decode_work_secret(item["secret"]).session_ingress_token
            with contextlib.suppress(httpx.HTTPError):
                await client.post(f"/v1/environments/{env_id}/work/{item['id']}/ack", json={}, headers=auth(token))
            data = item.get("data") or {}
            if data.get("type") != "session":
                continue
            sid = str(data["id"])
            host = self.hosts.get(sid)
            if host is not None:
                host.set_token(token)  # a re-dispatch of a session this bridge already runs
                continue
            transport = HybridTransport(self.server_url, sid, token, config=FAST)
            fetcher = AttachmentFetcher(self.server_url, token, str(self.workdir), sid)
            host = SessionHost(sid, transport, self.agent_spec(), HostConfig(term_grace=5, eof_grace=5),
                               attachments=fetcher)
            self.hosts[sid] = host
            task = asyncio.create_task(host.run(), name=f"host-{sid}")
            tasks.add(task)


def axe_source(cache: pathlib.Path) -> str | None:
    """axe-core from the npm registry, installed at test time into a git-ignored folder
    (None only when this machine has no npm at all)."""
    target = cache / "node_modules" / "axe-core" / "axe.min.js"
    if not target.exists():
        if shutil.which("npm") is None:
            return None
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(cache), "--no-save", "--no-package-lock",
                        "--no-audit", "--no-fund", "axe-core@4"], check=True, capture_output=True, timeout=240)
    return target.read_text()


def artifacts_dir() -> pathlib.Path:
    path = ROOT / "test-artifacts" / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path
