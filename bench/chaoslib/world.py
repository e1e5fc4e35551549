"""One chaos *world*: a real `tether server` (SQLite) on one worker transport, two fault-injecting
proxies in front of it (one for the bridges and workers, one for the clients), single-session
bridges (`tether rc --spawn session` with `tether agent` on the scripted backend) and, on v2,
code sessions run by `tether agent --sdk-url` workers that the chaos driver supervises the way the
env-less REPL bridge would (a C2 `/bridge` call for a token and an epoch, a new worker when one
exits or a takeover is injected).

Every worker process gets ``TETHER_ACK_LOG`` (one file per process): the stored events the server
acknowledged, for the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from tests.support.bridge import BridgeProcess
from tests.support.cut_proxy import CutProxy
from tests.support.server import ServerProcess

from tether.protocol.ids import id_body

SCENARIO = """\
# The chaos soak's scripted model: it streams (so cuts land mid-message), asks to use a tool
# (so a permission prompt is open while faults hit), and streams again after the tool.
reply after tool
chunk 16
delay 0.005
text The tool answered: {tool_result}
more \\nDone with this turn.

reply on prompt
chunk 12
delay 0.005
text Working on: {prompt}. Streaming a few tokens first so that a cut lands mid-message.
tool Write file_path=chaos-note.txt content="{prompt}\\n"
"""


@dataclass
class WorldConfig:
    transport: str  # v1 | v2
    bridges: int
    code_sessions: int  # v2 only: sessions run by `tether agent --sdk-url` workers
    token_ttl_s: float
    lease_ttl_s: float


@dataclass
class Session:
    sid: str
    kind: str  # bridge | code
    owner: Any  # the ChaosBridge or CodeWorker that runs it


class ChaosBridge(BridgeProcess):
    """`tether rc` in its own process group (a "laptop sleep" stops it and its agents' groups)."""

    def start(self) -> ChaosBridge:
        self.home.mkdir(parents=True, exist_ok=True)
        self.events = []
        argv = [sys.executable, "-m", "tether.cli.main", "rc", "--json", "--agent", self.agent, *self.args]
        self.proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env(), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self._start_readers()
        return self

    def _start_readers(self) -> None:
        assert self.proc is not None
        self._threads = [threading.Thread(target=self._read_out, args=(self.proc,), daemon=True),
                         threading.Thread(target=self._read_err, args=(self.proc,), daemon=True)]
        for t in self._threads:
            t.start()


@dataclass
class BridgeSlot:
    """One project directory served by a bridge; the bridge is replaced after a kill (``--continue``)."""
    index: int
    cwd: pathlib.Path
    home: pathlib.Path
    ack_dir: pathlib.Path
    bridge: ChaosBridge | None = None
    session_id: str | None = None
    generation: int = 0
    exits: list[str] = field(default_factory=list)  # unexpected exits, described
    dead: bool = False  # its session cannot be resumed any more

    def ack_log(self) -> pathlib.Path:
        return self.ack_dir / f"bridge{self.index}-{self.generation}.jsonl"


def _child_pids(pid: int) -> list[int]:
    """The direct children of ``pid``, whichever of its threads started them (Linux /proc)."""
    children: list[int] = []
    for task in pathlib.Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            children += [int(c) for c in (task / "children").read_text().split()]
    return children


REFRESH_AHEAD_S = 8.0  # the soak's short-lived tokens are refreshed this long before they expire


class CodeWorker:
    """A code session and the `tether agent --sdk-url` worker that currently runs it."""

    def __init__(self, world: World, sid: str, index: int) -> None:
        self.world = world
        self.sid = sid
        self.index = index
        self.cwd = world.root / f"code{index}"
        self.cwd.mkdir(parents=True, exist_ok=True)
        self.proc: asyncio.subprocess.Process | None = None
        self.epoch = 0
        self.generation = 0
        self.exits: Counter[str] = Counter()  # why earlier workers exited
        self.expires_at = 0.0  # loop time when the current worker's token expires
        self.skip_refresh = False  # a token-expiry fault: let the current token run out
        self._lock = asyncio.Lock()

    async def replace(self, reason: str) -> None:
        """C2 (a new epoch and token), then a new worker; the old one must stop by itself."""
        async with self._lock:
            body = await self.world.user_call("POST", f"/v1/code/sessions/{self.sid}/bridge", json={})
            old = self.proc
            self.generation += 1
            self.epoch = int(body["worker_epoch"])
            self.expires_at = asyncio.get_running_loop().time() + float(body.get("expires_in") or 3600)
            self.proc = await self._spawn(str(body["worker_jwt"]), self.epoch)
            self.world.notes[f"code_worker_started:{reason}"] += 1
            if old is not None:
                task = asyncio.ensure_future(self._expect_exit(old))
                self.world.background.add(task)
                task.add_done_callback(self.world.background.discard)

    async def _spawn(self, token: str, epoch: int) -> asyncio.subprocess.Process:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_", "TETHER_"))}
        env.update(PYTHONUNBUFFERED="1", HOME=str(self.cwd), CLAUDE_CODE_SESSION_ACCESS_TOKEN=token,
                   CLAUDE_CODE_USE_CCR_V2="1", CLAUDE_CODE_WORKER_EPOCH=str(epoch),
                   CLAUDE_CODE_ENVIRONMENT_KIND="bridge",
                   TETHER_ACK_LOG=str(self.world.ack_dir / f"code{self.index}-{self.generation}.jsonl"))
        url = f"{self.world.bridge_proxy.url}/v1/code/sessions/{self.sid}"
        err = open(self.world.root / f"code{self.index}-{self.generation}.stderr", "wb")  # noqa: ASYNC230
        try:
            return await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tether.cli.main", "agent", "--sdk-url", url, "--session-id", self.sid,
                "--input-format", "stream-json", "--output-format", "stream-json", "--replay-user-messages",
                "--include-partial-messages", "--backend", "scripted", "--scenario", str(self.world.scenario),
                cwd=self.cwd, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=err)
        finally:
            err.close()

    async def _expect_exit(self, proc: asyncio.subprocess.Process) -> None:
        """A superseded worker learns of the newer epoch on its next write (at the latest its 20 s
        heartbeat) and exits 1; one still running after 60 s is a stale worker."""
        try:
            code = await asyncio.wait_for(proc.wait(), 60)
            self.world.notes[f"superseded_worker_exit:{code}"] += 1
        except TimeoutError:
            self.world.problems["stale worker still running 60 s after a takeover"] += 1
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    async def supervise(self, stop: asyncio.Event) -> None:
        """Like the env-less REPL bridge (docs/protocol.md §9.3): a fresh token and epoch by C2
        shortly before the token expires, and a new worker when one exits by itself (4003 after a
        token ran out, 4090 …)."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            proc = self.proc
            assert proc is not None
            waiter = asyncio.ensure_future(proc.wait())
            stopper = asyncio.ensure_future(stop.wait())
            refresh_in = max(0.5, self.expires_at - REFRESH_AHEAD_S - loop.time())
            await asyncio.wait({waiter, stopper}, timeout=None if self.skip_refresh else refresh_in,
                               return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            if stop.is_set():
                waiter.cancel()
                return
            if not waiter.done():  # the token is due for a refresh
                waiter.cancel()
                await self.world.retrying(lambda: self.replace("token refresh"))
            elif proc is self.proc:  # not a takeover of ours: the worker stopped by itself
                self.exits[f"exit {proc.returncode}"] += 1
                self.skip_refresh = False
                await self.world.retrying(lambda: self.replace("recovery"))

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class World:
    def __init__(self, root: pathlib.Path, name: str, cfg: WorldConfig, on_fault: Any) -> None:
        self.root = root
        self.name = name
        self.cfg = cfg
        self.on_fault = on_fault
        self.ack_dir = root / "acks"
        self.scenario = root / "scenario.txt"
        self.server = ServerProcess(
            root / "server", args=("--worker-transport", cfg.transport), worker_transport=cfg.transport,
            worker_token_ttl_s=cfg.token_ttl_s, lease_ttl_s=cfg.lease_ttl_s, lease_check_interval_s=1.0,
            limits={"rate_per_second": 0})
        self.token = ""
        self.bridge_proxy = CutProxy(0, on_fault=lambda label: on_fault(f"net {label} (bridge hop)"))
        self.client_proxy = CutProxy(0, on_fault=lambda label: on_fault(f"net {label} (client hop)"))
        self.slots: list[BridgeSlot] = []
        self.code_workers: list[CodeWorker] = []
        self.sessions: list[Session] = []
        self.tracks: dict[str, Any] = {}  # session id → its clients' SessionTrack (set by the driver)
        self.notes: Counter[str] = Counter()
        self.problems: Counter[str] = Counter()
        self.http: httpx.AsyncClient | None = None
        self.process_lock = asyncio.Lock()  # one process fault at a time in a world
        self._supervisors: list[asyncio.Task[None]] = []
        self.background: set[asyncio.Task[None]] = set()  # superseded workers expected to exit
        self._stop = asyncio.Event()

    # -- start --------------------------------------------------------------------------------

    async def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.ack_dir.mkdir(exist_ok=True)
        self.scenario.write_text(SCENARIO)
        await asyncio.to_thread(self.server.start)
        self.token = await asyncio.to_thread(self.server.token)  # a subprocess: CliRunner is not thread-safe
        for proxy in (self.bridge_proxy, self.client_proxy):
            proxy.upstream_port = self.server.port
            await proxy.__aenter__()
        self.http = httpx.AsyncClient(base_url=self.client_proxy.url, timeout=10,
                                      headers={"Authorization": f"Bearer {self.token}"})
        for i in range(self.cfg.bridges):
            slot = BridgeSlot(i, self.root / f"project{i}", self.root / f"home{i}", self.ack_dir)
            slot.cwd.mkdir(parents=True, exist_ok=True)
            self.slots.append(slot)
        await asyncio.gather(*(self._start_bridge(slot, resume=False) for slot in self.slots))
        for slot in self.slots:
            assert slot.session_id is not None
            self.sessions.append(Session(slot.session_id, "bridge", slot))
        for i in range(self.cfg.code_sessions if self.cfg.transport == "v2" else 0):
            body = await self.user_call("POST", "/v1/code/sessions", json={"title": f"chaos code {i}", "bridge": {}})
            worker = CodeWorker(self, str(body["session"]["id"]), i)
            await worker.replace("start")
            self.code_workers.append(worker)
            self.sessions.append(Session(worker.sid, "code", worker))
            self._supervisors.append(asyncio.ensure_future(worker.supervise(self._stop)))

    def _bridge(self, slot: BridgeSlot, resume: bool) -> ChaosBridge:
        agent = f"tether agent --backend scripted --scenario {self.scenario}"
        args = ("--continue",) if resume else ("--spawn", "session", "--name", f"chaos {self.name} {slot.index}")
        return ChaosBridge(self.bridge_proxy.url, self.token, slot.cwd, slot.home, *args, agent=agent,
                           env={"TETHER_ACK_LOG": str(slot.ack_log())})

    async def _start_bridge(self, slot: BridgeSlot, *, resume: bool) -> None:
        """Start a bridge; a ``--continue`` that cannot reach the server (an injected fault) is run
        again, as its user would, for up to a minute."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        while True:
            try:
                await self._start_bridge_once(slot, resume=resume)
                return
            except AssertionError as exc:
                if not resume or "Cannot reach" not in str(exc) or loop.time() > deadline:
                    raise
                self.notes["`tether rc --continue` could not reach the server; run again"] += 1
                await asyncio.sleep(2.0)  # the user's pause before running the command again

    async def _start_bridge_once(self, slot: BridgeSlot, *, resume: bool) -> None:
        slot.generation += 1
        bridge = self._bridge(slot, resume)
        slot.bridge = bridge
        await asyncio.to_thread(bridge.start)
        name = "session_resumed" if resume else "session_created"
        event = await asyncio.to_thread(bridge.wait_for, name, None, 90.0)
        sid = str(event["session_id"])
        if slot.session_id is not None and id_body(sid) != id_body(slot.session_id):
            self.problems["a resumed bridge serves another session"] += 1
        slot.session_id = slot.session_id or sid

    # -- helpers -----------------------------------------------------------------------------------

    async def user_call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A user API call through the client proxy, retried through faults until it is answered."""
        assert self.http is not None
        for attempt in itertools.count(1):
            try:
                r = await self.http.request(method, path, **kwargs)
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code < 300:
                return r.json()
            if r is not None and r.status_code < 500 and r.status_code != 429:
                raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:300]}")
            if attempt >= 60:
                raise RuntimeError(f"{method} {path}: no answer after {attempt} attempts")
            await asyncio.sleep(0.5)  # a retry delay through injected faults

    async def retrying(self, action: Any, attempts: int = 20) -> None:
        for _ in range(attempts):
            try:
                await action()
                return
            except (RuntimeError, OSError) as exc:
                self.notes[f"retry: {type(exc).__name__}"] += 1
                await asyncio.sleep(1.0)  # a retry delay
        self.problems["a recovery action failed 20 times"] += 1

    # -- process faults ------------------------------------------------------------------------------

    async def kill_server(self) -> None:
        """SIGKILL the server and start it again on the same port and data dir (the proxies stay)."""
        await asyncio.to_thread(self.server.kill)
        await asyncio.to_thread(self.server.start)

    async def kill_bridge(self, slot: BridgeSlot) -> None:
        """SIGKILL the bridge (its agent sees end of input), then `tether rc --continue`."""
        bridge = slot.bridge
        assert bridge is not None and bridge.proc is not None
        if bridge.proc.poll() is not None:
            self.problems["a bridge had exited before it was killed"] += 1
        else:
            await asyncio.to_thread(bridge.kill)
        await self._start_bridge(slot, resume=True)

    async def sleep_bridge(self, slot: BridgeSlot, seconds: float) -> None:
        """A laptop sleep longer than the work lease while a permission prompt is open: SIGSTOP the
        bridge and its agent, SIGCONT after ``seconds``. The session's users do not answer
        meanwhile (they wait for the prompt to open, then for the machine to wake)."""
        bridge = slot.bridge
        assert bridge is not None and bridge.proc is not None
        track = self.tracks.get(slot.session_id or "")
        if track is not None:
            track.hold_answers = True
            try:
                async with asyncio.timeout(30):
                    while not track.open_requests():
                        track.changed.clear()
                        await track.changed.wait()
            except TimeoutError:
                self.notes["laptop sleep without an open permission prompt"] += 1
        groups = [bridge.proc.pid, *_child_pids(bridge.proc.pid)]  # agents run in process groups of their own
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)  # the injected sleep itself
        finally:
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGCONT)
            if track is not None:
                track.hold_answers = False

    async def takeover(self, worker: CodeWorker) -> None:
        await worker.replace("takeover")

    def block_token_refresh(self, seconds: float) -> None:
        """Worker tokens expire mid-turn: the bridges cannot reach `bridge/reconnect` (E7) for a
        while, and the code sessions' current tokens are left to run out."""
        self.bridge_proxy.refuse_requests(b"/bridge/reconnect", seconds)
        for worker in self.code_workers:
            worker.skip_refresh = True

    # -- health -------------------------------------------------------------------------------------

    def check_bridges(self) -> None:
        """A bridge that exited by itself is a finding (its session ended under faults)."""
        for slot in self.slots:
            b = slot.bridge
            if b is not None and b.proc is not None and b.proc.poll() is not None:
                ended = [e for e in b.events if e.get("event") in ("session_ended", "failed", "stopped")]
                why = "; ".join(str(e.get("message", ""))[:200] for e in ended[-3:]) or f"exit {b.proc.returncode}"
                slot.exits.append(why)
                self.problems[f"bridge exited by itself: {why[:160]}"] += 1
                self._dump(slot)
                slot.bridge = None

    def _dump(self, slot: BridgeSlot) -> None:
        """The bridge's JSON events and stderr, for the post-mortem (kept with --keep)."""
        b = slot.bridge
        if b is not None:
            with b._changed:
                events = [json.dumps(e) for e in b.events]
                err = list(b.stderr)
            with contextlib.suppress(OSError):
                (self.root / f"bridge{slot.index}-{slot.generation}.log").write_text(
                    "\n".join(["--- events ---", *events, "--- stderr ---", *err, ""]))

    async def revive_bridges(self) -> None:
        """Restart a bridge that exited by itself (with --continue) so the soak goes on."""
        for slot in self.slots:
            if slot.bridge is None and not slot.dead:
                try:
                    await self._start_bridge(slot, resume=True)
                except (AssertionError, RuntimeError) as exc:
                    self.problems[f"bridge could not resume: {str(exc).splitlines()[0][:160]}"] += 1
                    self._dump(slot)
                    slot.bridge, slot.dead = None, True

    # -- stop -------------------------------------------------------------------------------------

    async def stop(self) -> None:
        self._stop.set()
        for task in self._supervisors:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)
        await asyncio.gather(*(w.stop() for w in self.code_workers))
        await asyncio.gather(*self.background, return_exceptions=True)
        # SIGTERM: the bridges flush what they have (their acks are recorded), then tear down
        await asyncio.gather(*(asyncio.to_thread(s.bridge.stop) for s in self.slots if s.bridge is not None))
        for slot in self.slots:
            self._dump(slot)
        if self.http is not None:
            await self.http.aclose()
        for proxy in (self.bridge_proxy, self.client_proxy):
            with contextlib.suppress(Exception):
                await proxy.__aexit__(None, None, None)
        await asyncio.to_thread(self.server.stop)

    @property
    def db_path(self) -> pathlib.Path:
        return self.server.data_dir / "tether.db"
