"""`tether up`, the work behind the command: directory claim, server, login, bridge, and what
happens to the server at exit — in the order and for the reasons :mod:`tether.cli.up` gives."""

from __future__ import annotations

import asyncio
import os
import pathlib
import shutil
import socket
from dataclasses import dataclass

import typer
from rich.console import Console

from tether.bridge.display import qr_text
from tether.bridge.loop import Bridge
from tether.bridge.spawner import TETHER_AGENT, AgentChoice, AgentNotFound, choose_agent
from tether.bridge.startup import StartupError
from tether.cli.bridge_run import (
    claim_directory,
    configure_logging,
    current_directory,
    interactive,
    require_pointer,
    start_bridge,
)
from tether.cli.remote_control import RcArgs
from tether.cli.server_ctl import (
    ServerChild,
    ServerStartError,
    describe_bridges,
    is_ready,
    online_bridges,
    port_open,
    spawn_server,
    use_verb,
)
from tether.client.api import ApiClient
from tether.client.credentials import Credentials, CredentialsError, CredentialStore
from tether.errors import TetherError
from tether.server import runtime
from tether.server.config import Config, config_from_env

err = Console(stderr=True, highlight=False, soft_wrap=True)
DEFAULT_PORT = 8787


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


def scenario_agent(path: pathlib.Path, spec: str | None) -> AgentChoice:
    """``--scenario FILE``: the offline scripted model playing FILE, checked now (a bad line is a
    usage error before anything starts, not a failure of the first session)."""
    from tether.agent.scenario import ScenarioError, parse_scenario

    if spec is not None and spec != "tether":
        raise typer.BadParameter(f"it plays a script on the offline tether agent, not on --agent {spec}.",
                                 param_hint="--scenario")
    try:
        parse_scenario(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc.strerror or exc}", param_hint="--scenario") from None
    except (ScenarioError, UnicodeDecodeError) as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="--scenario") from None
    full = path.resolve()
    return AgentChoice((*TETHER_AGENT, "--backend", "scripted", "--scenario", str(full)), "tether",
                       f"tether agent (offline scripted model playing {full})")


def local_config(data_dir: pathlib.Path, port: int) -> Config:
    """The server ``tether up`` runs: loopback, SQLite in ``data_dir`` (other settings from the environment)."""
    cfg = config_from_env(Config())
    cfg.data_dir, cfg.host, cfg.port, cfg.database_url, cfg.public_url = data_dir, "127.0.0.1", port, None, None
    return cfg


async def _mint(data_dir: pathlib.Path, url: str, *, token: bool) -> tuple[str | None, str]:
    """A personal API token for the server's owner (when ``token``) and a fresh one-time login link."""
    from tether.server.service.accounts import open_accounts

    cfg = local_config(data_dir, DEFAULT_PORT)
    cfg.public_url = url  # what the link names
    async with open_accounts(cfg) as accounts:
        secret = await accounts.owner_token(f"tether up on {socket.gethostname()}") if token else None
        link, _ = await accounts.owner_login_link()
    return secret, link


async def _login_works(url: str, creds: Credentials | None) -> bool:
    if creds is None:
        return False
    async with ApiClient(url, creds) as api:
        try:
            await api.me()
            return True
        except TetherError:
            return False


@dataclass
class Served:
    url: str
    creds: Credentials
    child: ServerChild | None = None
    """The server this command started (it stops it at exit)."""
    link: str | None = None
    reused: runtime.RuntimeInfo | None = None
    """The server already running from the data directory, when that is the one used."""


async def main(port: int | None, data_dir: pathlib.Path, args: RcArgs, agent_spec: str | None,
               agent_choice: AgentChoice | None = None) -> int:
    console = None if args.as_json or not interactive() else Console(highlight=False)
    out = console or Console(highlight=False, soft_wrap=True)
    configure_logging(args.verbose, args.debug_file, console)
    store = CredentialStore()
    try:
        agent, agent_note = (agent_choice, None) if agent_choice is not None else pick_agent(agent_spec)
        claim = claim_directory(current_directory())  # before any server is started or reused
        if args.resume:  # nothing to continue: say so before starting a server and printing its link
            require_pointer(current_directory())
    except (AgentNotFound, StartupError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    with claim:
        try:
            served = await _server_and_login(store, port, data_dir)
        except (StartupError, ServerStartError, CredentialsError) as exc:
            err.print(f"[red]error:[/] {exc.message}")
            return 1
        code = 1
        bridges: list[Bridge] = []
        try:
            where = "" if served.child else " (the server already running from " + (
                f"{data_dir}, pid {served.reused.pid})" if served.reused else f"{served.url})")
            out.print(f"[bold]Tether is up[/] · web: {served.url}/code{where}")
            if served.link:
                out.print(f"Log in (one-time link): {served.link}")
                out.print(qr_text(served.link), markup=False, highlight=False)
            out.print(f"Agent: {agent.description}")
            if agent_note:
                out.print(f"[yellow]note:[/] {agent_note}")
            code = await start_bridge(served.url, served.creds, store, args, agent, console, claim=claim,
                                      on_bridge=bridges.append)
            return code
        finally:
            if served.child is not None:
                await _leave_server(served.child, data_dir, code, bridges, out, args.as_json)


async def _leave_server(child: ServerChild, data_dir: pathlib.Path, code: int, bridges: list[Bridge],
                        out: Console, as_json: bool) -> None:
    """Stop the server this command started — unless the bridge failed and others still use it."""
    own = frozenset(b.environment_id for b in bridges if b.environment_id)
    others = await online_bridges(local_config(data_dir, child.info.port), own) or []
    if others and code != 0:
        err.print(f"[yellow]note:[/] this bridge stopped after an error, but {describe_bridges(others, other=True)} "
                  f"{use_verb(others)} the server: it keeps running at {child.info.url} (pid {child.proc.pid}). "
                  "Stop it with `tether server stop`.")
        return
    if others:
        err.print(f"[yellow]warning:[/] {describe_bridges(others, other=True)} {use_verb(others)} this server; "
                  f"stopping it disconnects {'it' if len(others) == 1 else 'them'}. To keep a server for every "
                  "project, start it once with "
                  "`tether server --detach`; `tether up` then uses it and leaves it running.")
    if not as_json:
        out.print("Stopping the server (started by this `tether up`)…")
    await asyncio.to_thread(child.stop)


async def _server_and_login(store: CredentialStore, port: int | None, data_dir: pathlib.Path) -> Served:
    configured = store.env_server()
    if configured:
        creds = store.resolve(configured)
        if creds is None:
            raise StartupError(f"TETHER_SERVER is {configured}, but this CLI is not logged in to it. Run "
                               f"`tether login --server {configured}`, or unset TETHER_SERVER to run a local server.")
        return Served(configured, creds)
    running = runtime.running_server(data_dir)
    if running is not None:
        if port is not None and port != running.port:
            raise StartupError(f"A Tether server already runs from {data_dir} on {running.url} (pid {running.pid}), "
                               f"not on port {port}. Drop --port to use it, stop it with `tether server stop`, or "
                               "pass another --data-dir.")
        served = await _login_local(store, running.url, data_dir)
        served.reused = running
        return served
    url = f"http://127.0.0.1:{port or DEFAULT_PORT}"
    stored = store.read_file_or_none()
    if stored is not None and stored.server != url and await asyncio.to_thread(is_ready, stored.server) \
            and await _login_works(stored.server, stored):
        return Served(stored.server, stored)
    if await asyncio.to_thread(port_open, "127.0.0.1", port or DEFAULT_PORT):
        return await _foreign_port(store, url, port or DEFAULT_PORT, data_dir)
    child = await asyncio.to_thread(spawn_server, local_config(data_dir, port or DEFAULT_PORT), "warning",
                                    detached=False)
    try:
        served = await _login_local(store, child.info.url, data_dir)
        served.child = child
        return served
    except BaseException:
        await asyncio.to_thread(child.stop)
        raise


async def _foreign_port(store: CredentialStore, url: str, port: int, data_dir: pathlib.Path) -> Served:
    """The port answers, but no server runs from ``data_dir``: use it only with a working login
    (its database is not ours to open); else say what to do."""
    if not await asyncio.to_thread(is_ready, url):
        raise StartupError(f"Port {port} is in use by something else; pass --port.")
    stored = store.read_file_or_none()
    if stored is not None and stored.server == url and await _login_works(url, stored):
        return Served(url, stored)
    raise StartupError(
        f"A Tether server already listens on {url}, but it does not run from {data_dir} (it has another data "
        "directory, or another TETHER_HOME). Either use it: `tether login --server " + url + "`, then "
        "`tether remote-control` here (`tether admin login-link --data-dir <its data dir>` on its machine gives a "
        "web login link); or stop it; or start a separate one with `tether up --port <another port>`.")


async def _login_local(store: CredentialStore, url: str, data_dir: pathlib.Path) -> Served:
    """Log this CLI in to the server running from ``data_dir`` at ``url`` (minting through the data dir)."""
    stored = store.read_file_or_none()
    if stored is not None and stored.server == url and await _login_works(url, stored):
        _, link = await _mint(data_dir, url, token=False)
        return Served(url, stored, link=link)
    token, link = await _mint(data_dir, url, token=True)
    assert token is not None
    creds = Credentials(server=url, access_token=token, kind="personal")
    async with ApiClient(url, creds) as api:
        try:
            creds = creds.with_identity(await api.me())
        except TetherError as exc:
            raise StartupError(f"The server at {url} does not use {data_dir} ({exc.message}); "
                               "pass --port or --data-dir.") from None
    if stored is not None and stored.server != url:
        err.print(f"note: replacing the stored login to {stored.server} with {url}.")
    store.save(creds)
    return Served(url, creds, link=link)
