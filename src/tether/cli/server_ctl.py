"""A server as a background process: start one (``tether server --detach``, and the child
``tether up`` starts), stop it, report on it, and count the bridges that use it.

Everything here finds the server through its data directory (:mod:`tether.server.runtime`):
the lock says whether it is alive, the runtime file where it listens.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from rich.console import Console
from rich.table import Table

from tether.cli.runner_child import local_url
from tether.errors import TetherError
from tether.server import runtime
from tether.server.config import Config, config_from_env

if TYPE_CHECKING:  # the store loads only when a command needs it
    from tether.server.store.records import EnvironmentRecord

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
READY_TIMEOUT_S = 60.0
PROBE_INTERVAL_S = 0.1


class ServerStartError(TetherError):
    """The server process did not come up; the message says why and where its log is."""

    error_type = "server_start_error"


@dataclass
class ServerChild:
    """A server process this command started; ``info`` is what its runtime file says."""

    proc: subprocess.Popen[bytes]
    info: runtime.RuntimeInfo
    log_path: pathlib.Path

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def ensure_data_dir(path: pathlib.Path) -> str | None:
    """Create the server's data directory if needed; None when it is usable, else why not (a
    message for --data-dir: a path that cannot be created or written would otherwise surface as a
    traceback from deep in the start-up)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create {path}: {exc.strerror or exc}"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host if host not in ("0.0.0.0", "::", "") else "127.0.0.1", port)) == 0


def is_ready(url: str) -> bool:
    """``GET /readyz`` answers 200 (certificates are not checked: a liveness probe sends no secret)."""
    try:
        return httpx.get(f"{url}/readyz", timeout=2, verify=False).status_code == 200
    except httpx.HTTPError:
        return False


def server_argv(cfg: Config, log_level: str, *, detached: bool, extra_args: Sequence[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "tether.cli.main", "server", "--host", cfg.host, "--port", str(cfg.port),
            "--data-dir", str(cfg.data_dir.resolve()), "--log-level", log_level,
            "--worker-transport", cfg.worker_transport, "--lease-ttl", repr(cfg.lease_ttl_s)]
    for flag, value in (("--database-url", cfg.database_url), ("--public-url", cfg.public_url),
                        ("--tls-cert", cfg.tls_cert), ("--tls-key", cfg.tls_key),
                        ("--trusted-proxy", cfg.trusted_proxy)):
        if value:
            argv += [flag, value]
    if detached:
        argv.append("--detached-child")
    return [*argv, *extra_args]


def spawn_server(cfg: Config, log_level: str = "warning", *, detached: bool,
                 extra_args: Sequence[str] = ()) -> ServerChild:
    """Start ``tether server`` in a session of its own (Ctrl-C in this terminal does not reach it),
    its output appended to ``server.log`` in the data dir; return once its runtime file says it
    listens and ``/readyz`` answers."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = cfg.data_dir / "server.log"
    with open(log_path, "ab") as log:
        offset = log.tell()
        proc = subprocess.Popen(server_argv(cfg, log_level, detached=detached, extra_args=extra_args), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    # probed where this machine reaches it: behind a TLS proxy (--public-url) that is loopback,
    # and the public name may not even resolve here
    probe = local_url(cfg.host, cfg.port, bool(cfg.tls_cert), cfg.public_url)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        info = runtime.read_runtime(cfg.data_dir)
        if info is not None and info.pid == proc.pid and is_ready(probe):
            return ServerChild(proc, info, log_path)
        if proc.poll() is not None or time.monotonic() > deadline:
            child = ServerChild(proc, info or _placeholder(cfg, proc.pid), log_path)
            child.stop()
            tail = _read_from(log_path, offset)[-2000:]
            raise ServerStartError(f"`tether server` did not start (its log: {log_path}):\n{tail}")
        time.sleep(PROBE_INTERVAL_S)  # readiness of another process: nothing to wait on instead


def _placeholder(cfg: Config, pid: int) -> runtime.RuntimeInfo:
    return runtime.RuntimeInfo(pid, cfg.url, cfg.host, cfg.port, str(cfg.data_dir), time.time(), "")


def _read_from(path: pathlib.Path, offset: int) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def login_line(log_path: pathlib.Path, offset: int = 0) -> str | None:
    for line in _read_from(log_path, offset).splitlines():
        if line.startswith("Log in: "):
            return line.removeprefix("Log in: ").strip()
    return None


# ---- bridges that use a server --------------------------------------------------------------------

async def online_bridges(cfg: Config, exclude: frozenset[str] = frozenset()) -> list[EnvironmentRecord] | None:
    """Environments (of every organisation) that polled lately, read from the server's database;
    None when the database cannot be read (then nobody can say)."""
    from tether.server.store import Store
    from tether.server.views import is_online

    if cfg.database_url is None and not (cfg.data_dir / "tether.db").exists():
        return None  # never create a database just to look into it
    store = Store(cfg.db_url)
    try:  # no migration: the running server owns the schema
        async with store.read() as tx:
            rows = await tx.environments.active()
    except Exception:  # a database we cannot open says nothing about bridges; never fail a stop for it
        return None
    finally:
        await store.close()
    at = time.time()
    return [r for r in rows if r.id not in exclude and is_online(r, cfg.poll_interval_s, at)]


def describe_bridges(rows: Sequence[EnvironmentRecord], *, other: bool = False) -> str:
    """``2 bridges (laptop:/work/a, laptop:/work/b)``; ``other`` says ``2 other bridges``."""
    shown = [f"{r.machine_name or '?'}:{r.directory or '?'}" for r in rows[:3]]
    more = f" and {len(rows) - 3} more" if len(rows) > 3 else ""
    n = len(rows)
    return f"{n} {'other ' if other else ''}bridge{'s' if n != 1 else ''} ({', '.join(shown)}{more})"


def use_verb(rows: Sequence[EnvironmentRecord]) -> str:
    return "uses" if len(rows) == 1 else "use"


# ---- commands ----------------------------------------------------------------------------------------

def config_for(data_dir: pathlib.Path) -> Config:
    cfg = config_from_env(Config())
    cfg.data_dir = data_dir
    return cfg


def start_detached(cfg: Config, log_level: str, *, extra_args: Sequence[str] = ()) -> int:
    """``tether server --detach``: 0 when a server runs from the data dir afterwards."""
    running = runtime.running_server(cfg.data_dir)
    if running is not None:
        if running.port != cfg.port:
            err.print(f"[red]error:[/] A Tether server already runs from {cfg.data_dir} on {running.url} "
                      f"(pid {running.pid}), not on port {cfg.port}. Stop it first with `tether server stop`.")
            return 1
        out.print(f"A Tether server already runs from {cfg.data_dir}: {running.url} (pid {running.pid}).")
        return 0
    if port_open(cfg.host, cfg.port):
        err.print(f"[red]error:[/] Port {cfg.port} is already in use. Pass --port, or stop what listens there.")
        return 1
    log_path = cfg.data_dir / "server.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    try:
        child = spawn_server(cfg, log_level, detached=True, extra_args=extra_args)
    except ServerStartError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        return 1
    out.print(f"Tether server running in the background at [bold]{child.info.url}[/] (pid {child.proc.pid}).")
    link = login_line(log_path, offset)
    if link:
        out.print(f"Log in: {link}")
    out.print(f"Log: {log_path} · stop it with `tether server stop`"
              + ("" if cfg.data_dir == Config().data_dir else f" --data-dir {cfg.data_dir}") + ".")
    return 0


def stop_server(data_dir: pathlib.Path, timeout: float) -> int:
    """``tether server stop``: 0 when no server runs from the data dir afterwards."""
    info = runtime.running_server(data_dir)
    if info is None:
        out.print(f"No Tether server is running from {data_dir}.")
        return 0
    bridges = asyncio.run(online_bridges(config_for(data_dir)))
    if bridges:
        err.print(f"[yellow]note:[/] {describe_bridges(bridges)} {use_verb(bridges)} this "
                  f"server; stopping it disconnects {'it' if len(bridges) == 1 else 'them'} "
                  "(they keep retrying for 10 minutes).")
    if not info.detached:
        err.print(f"[yellow]note:[/] pid {info.pid} runs in the foreground (e.g. for `tether up`), which loses "
                  "its server.")
    try:
        os.kill(info.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    if not _wait_unlocked(data_dir, timeout):
        err.print(f"[yellow]note:[/] no clean stop after {timeout:g} s; killing pid {info.pid}.")
        try:
            os.kill(info.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if not _wait_unlocked(data_dir, 5.0):
            err.print(f"[red]error:[/] pid {info.pid} still holds {data_dir / runtime.LOCK_FILE}.")
            return 1
    out.print(f"Stopped the Tether server at {info.url} (pid {info.pid}).")
    return 0


def _wait_unlocked(data_dir: pathlib.Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while runtime.lock_held(data_dir):
        if time.monotonic() > deadline:
            return False
        time.sleep(PROBE_INTERVAL_S)  # another process's exit: nothing to wait on instead
    return True


def show_status(data_dir: pathlib.Path, as_json: bool) -> int:
    info = runtime.running_server(data_dir)
    if info is None:
        stale = runtime.read_runtime(data_dir)
        if as_json:
            print(json.dumps({"running": False, "data_dir": str(data_dir)}, indent=2))
        else:
            note = f" (pid {stale.pid} did not stop cleanly; its runtime file is stale)" if stale else ""
            out.print(f"No Tether server is running from {data_dir}{note}. Start one with "
                      "`tether server --detach` (or `tether up`).")
        return 1
    bridges = asyncio.run(online_bridges(config_for(data_dir)))
    # a plain-HTTP server behind a TLS proxy answers on loopback; one with TLS on its own URL
    ready = is_ready(local_url(info.host, info.port, False, None)) or is_ready(info.url)
    if as_json:
        report = {"running": True, "ready": ready, **info.to_json(),
                  "uptime_s": round(max(0.0, time.time() - info.started_at), 1),
                  "bridges_online": None if bridges is None else [
                      {"id": b.id, "machine_name": b.machine_name, "directory": b.directory}
                      for b in bridges]}
        print(json.dumps(report, indent=2))
        return 0
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    grid.add_row("Server", f"{info.url} " + ("[green](ready)[/]" if ready else "[yellow](not ready)[/]"))
    grid.add_row("Process", f"pid {info.pid}, " + ("in the background" if info.detached else "in the foreground")
                 + f", up {_duration(time.time() - info.started_at)}")
    grid.add_row("Data", info.data_dir)
    if info.log_file:
        grid.add_row("Log", info.log_file)
    grid.add_row("Bridges", "?" if bridges is None else describe_bridges(bridges) + " online" if bridges
                 else "none online")
    grid.add_row("Version", info.version)
    out.print(grid)
    return 0


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    return f"{seconds / 3600:.1f} h"
