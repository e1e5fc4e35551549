"""`tether up`, the work behind the command: server child, login, bridge — in the order and
for the reasons :mod:`tether.cli.up` gives."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from rich.console import Console

from tether.bridge.display import qr_text
from tether.bridge.spawner import TETHER_AGENT, AgentChoice, AgentNotFound, choose_agent
from tether.bridge.startup import StartupError
from tether.cli.bridge_run import configure_logging, interactive, start_bridge
from tether.cli.remote_control import RcArgs
from tether.client.api import ApiClient
from tether.client.credentials import Credentials, CredentialsError, CredentialStore
from tether.errors import TetherError

err = Console(stderr=True, highlight=False, soft_wrap=True)
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def pick_agent(spec: str | None, environ: dict[str, str] | None = None) -> tuple[AgentChoice, str | None]:
    """The agent ``tether up`` runs, and a line to say about it (None: nothing to say)."""
    env = os.environ if environ is None else environ
    if spec is not None:
        return choose_agent(spec), None
    found = shutil.which("claude")
    if found:
        return AgentChoice((found,), "claude", f"the stock claude CLI ({found})"), None
    if env.get("ANTHROPIC_API_KEY"):
        return (AgentChoice((*TETHER_AGENT, "--backend", "anthropic"), "tether",
                            "tether agent with the Anthropic API (ANTHROPIC_API_KEY)"), None)
    return (AgentChoice((*TETHER_AGENT, "--backend", "scripted"), "tether", "tether agent (offline scripted model)"),
            "No `claude` on PATH and no ANTHROPIC_API_KEY: sessions use tether agent with the offline scripted "
            "model, which answers from a script, not a real model. Install Claude Code or set ANTHROPIC_API_KEY "
            "for real work.")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@dataclass
class ServerChild:
    proc: subprocess.Popen[bytes]
    log_path: pathlib.Path

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_server(data_dir: pathlib.Path, port: int) -> ServerChild:
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "server.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.cli.main", "server", "--host", "127.0.0.1", "--port", str(port),
             "--data-dir", str(data_dir), "--log-level", "warning"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches `tether up`, which stops the server last
        )
    child = ServerChild(proc, log_path)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not _ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            child.stop()
            tail = log_path.read_text(errors="replace")[-2000:]
            raise StartupError(f"`tether server` did not start (see {log_path}):\n{tail}")
        time.sleep(0.1)  # a readiness probe of a child process; nothing to wait on instead
    return child


async def _mint(data_dir: pathlib.Path, port: int, *, token: bool) -> tuple[str | None, str]:
    """A personal API token for the server's owner (when ``token``) and a fresh one-time login link."""
    from tether.server.auth.service import Auth
    from tether.server.config import Config, config_from_env
    from tether.server.store import Store

    cfg = config_from_env(Config())
    cfg.data_dir, cfg.host, cfg.port, cfg.database_url, cfg.public_url = data_dir, "127.0.0.1", port, None, None
    store = Store(cfg.db_url)
    try:
        await store.open()
        auth = Auth(cfg, store)
        await auth.open()
        _org, owner, _ = await auth.bootstrap()
        secret = None
        async with store.write() as tx:
            if token:
                issued = await auth.issue(tx, "personal", owner, ttl=None,
                                          name=f"tether up on {socket.gethostname()}")
                await tx.insert_audit(owner["org_id"], "admin", "token.create", issued.row["id"],
                                      {"name": "tether up"}, time.time())
                secret = str(issued.secret)
            link = await auth.login_link(tx, owner)
        return secret, link
    finally:
        await store.close()


async def _login_works(url: str, creds: Credentials | None) -> bool:
    if creds is None:
        return False
    async with ApiClient(url, creds) as api:
        try:
            await api.me()
            return True
        except TetherError:
            return False


async def main(port: int, data_dir: pathlib.Path, args: RcArgs, agent_spec: str | None) -> int:
    console = None if args.as_json or not interactive() else Console(highlight=False)
    out = console or Console(highlight=False, soft_wrap=True)
    configure_logging(args.verbose, args.debug_file, console)
    store = CredentialStore()
    try:
        agent, agent_note = pick_agent(agent_spec)
    except AgentNotFound as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    child: ServerChild | None = None
    link: str | None = None
    try:
        try:
            url, creds, child, link = await _server_and_login(store, port, data_dir)
        except (StartupError, CredentialsError) as exc:
            err.print(f"[red]error:[/] {exc.message}")
            return 1
        out.print(f"[bold]Tether is up[/] · web: {url}/code" + ("" if child else " (an already running server)"))
        if link:
            out.print(f"Log in (one-time link): {link}")
            out.print(qr_text(link), markup=False, highlight=False)
        out.print(f"Agent: {agent.description}")
        if agent_note:
            out.print(f"[yellow]note:[/] {agent_note}")
        return await start_bridge(url, creds, store, args, agent, console)
    finally:
        if child is not None:
            if not args.as_json:
                out.print("Stopping the server…")
            await asyncio.to_thread(child.stop)


async def _server_and_login(store: CredentialStore, port: int,
                            data_dir: pathlib.Path) -> tuple[str, Credentials, ServerChild | None, str | None]:
    """(server URL, credentials, the server child if we started one, a one-time login link)."""
    configured = store.env_server()
    if configured:
        creds = store.resolve(configured)
        if creds is None:
            raise StartupError(f"TETHER_SERVER is {configured}, but this CLI is not logged in to it. Run "
                               f"`tether login --server {configured}`, or unset TETHER_SERVER to run a local server.")
        return configured, creds, None, None
    url = f"http://127.0.0.1:{port}"
    stored = store.read_file_or_none()
    if stored is not None and stored.server != url and await asyncio.to_thread(_ready, stored.server) \
            and await _login_works(stored.server, stored):
        return stored.server, stored, None, None
    child = None
    if await asyncio.to_thread(_port_open, port):
        if not await asyncio.to_thread(_ready, url):
            raise StartupError(f"Port {port} is in use by something else; pass --port.")
    else:
        child = await asyncio.to_thread(start_server, data_dir, port)
    try:
        if stored is not None and stored.server == url and await _login_works(url, stored):
            _, link = await _mint(data_dir, port, token=False)
            return url, stored, child, link
        token, link = await _mint(data_dir, port, token=True)
        assert token is not None
        creds = Credentials(server=url, access_token=token, kind="personal")
        async with ApiClient(url, creds) as api:
            try:
                creds = creds.with_identity(await api.me())
            except TetherError as exc:
                raise StartupError(f"The server on port {port} does not use {data_dir} ({exc.message}); "
                                   "pass --port or --data-dir.") from None
        if stored is not None and stored.server != url:
            err.print(f"note: replacing the stored login to {stored.server} with {url}.")
        store.save(creds)
        return url, creds, child, link
    except BaseException:
        if child is not None:
            await asyncio.to_thread(child.stop)
        raise


