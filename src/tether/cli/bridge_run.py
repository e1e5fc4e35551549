"""What `tether remote-control` does once its flags are valid: login, agent, spawn mode, then the
bridge (:class:`tether.bridge.loop.Bridge`) with the right display — the live panel when stdin and
stdout are a terminal, plain log lines otherwise, JSON lines with ``--json``. SIGINT/SIGTERM start
the ordered teardown; a second one kills the agents at once. `tether up` uses the same pieces.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import shutil
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console

from tether.bridge import settings
from tether.bridge.claim import DirectoryClaim, busy_message, holder_of
from tether.bridge.display import JsonSink, LiveDisplay, PlainSink, key_presses, next_path
from tether.bridge.loop import Bridge, BridgeOptions
from tether.bridge.pointer import FoundPointer, find_pointer
from tether.bridge.spawner import AgentChoice, AgentNotFound, choose_agent
from tether.bridge.startup import StartupError, git_info, preflight
from tether.bridge.status import EventSink
from tether.cli.remote_control import RcArgs
from tether.client.api import ApiClient
from tether.client.credentials import Credentials, CredentialsError, CredentialStore
from tether.protocol.bridge_policy import max_sessions_for, resolve_spawn_mode
from tether.protocol.runner_policy import claude_sandbox_settings

err = Console(stderr=True, highlight=False, soft_wrap=True)


def configure_logging(verbose: bool, debug_file: pathlib.Path | None, console: Console | None) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if debug_file else logging.INFO if verbose else logging.WARNING)
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if console is not None:
        from rich.logging import RichHandler

        handler = RichHandler(console=console, show_path=False, markup=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO if verbose else logging.WARNING)
    root.addHandler(handler)
    if debug_file is not None:
        debug_file.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(debug_file)
        fh.setLevel(logging.DEBUG)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def current_directory() -> pathlib.Path:
    return pathlib.Path(os.path.realpath(os.getcwd()))


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


@dataclass
class Prepared:
    options: BridgeOptions
    notices: list[str]


def require_pointer(directory: pathlib.Path) -> FoundPointer:
    """The crash-recovery pointer ``--continue`` resumes, or a StartupError saying there is none."""
    found = find_pointer(directory)
    if found is None:
        raise StartupError("No session to continue here: no crash-recovery pointer in this directory or its "
                           "git worktrees (pointers expire after 4 h). Run this again without --continue for a new one.")
    return found


async def prepare_options(api: ApiClient, args: RcArgs, agent: AgentChoice, multi_allowed: bool,
                          directory: pathlib.Path) -> Prepared:
    """Spawn mode, capacity, resume target and the directory's git facts → :class:`BridgeOptions`."""
    notices: list[str] = []
    resume_id: str | None = None
    if args.resume:
        found = require_pointer(directory)
        if found.directory != directory:
            holder = holder_of(found.directory)
            if holder is not None:
                raise StartupError(busy_message(holder, api.server))
            notices.append(f"Continuing the session of the worktree {found.directory}.")
        resume_id = found.pointer.session_id
    elif args.session_id:
        resume_id = args.session_id
    if (args.spawn not in (None, "session") or args.capacity is not None) and not multi_allowed:
        raise StartupError("Multi-session Remote Control is not enabled on this server.")
    git = await git_info(directory)
    saved = settings.load_spawn_mode(directory)
    mode = resolve_spawn_mode(resuming=resume_id is not None, explicit=args.spawn, saved=saved,
                              multi_session=multi_allowed)
    if mode == "worktree" and not git.is_repo:
        raise StartupError(f"--spawn worktree needs a git repository, and {directory} is not in one.")
    options = BridgeOptions(
        directory=directory, agent=agent, spawn_mode=mode, max_sessions=max_sessions_for(mode, args.capacity),
        machine_name=socket.gethostname(), branch=git.branch, git_repo_url=git.remote_url,
        worktree_available=git.is_repo, name=args.name, permission_mode=args.permission_mode,
        session_timeout_s=args.session_timeout or None, create_initial_session=args.create_session_in_dir,
        resume_session_id=resume_id, debug_file=args.debug_file, resume_command=args.resume_command,
        agent_args=("--settings", claude_sandbox_settings()) if args.sandbox and agent.kind == "claude" else (),
    )
    return Prepared(options, notices)


async def run_bridge(api: ApiClient, options: BridgeOptions, config: Any, *, as_json: bool, verbose: bool,
                     console: Console | None = None, show_qr: bool = False,
                     before_run: Callable[[Bridge], None] | None = None) -> int:
    """Run one bridge with its display, keys and signal handlers until it stops; its exit code."""
    loop = asyncio.get_running_loop()
    live: LiveDisplay | None = None
    sink: EventSink
    if as_json:
        sink = JsonSink()
    elif console is not None:
        holder: list[Bridge] = []
        live = LiveDisplay(lambda: holder[0].snapshot(), console, show_qr=show_qr, verbose=verbose,
                           login_links=lambda target: api.create_login_link(next_path(target)))
        sink = live
    else:
        sink = PlainSink()
    bridge = Bridge(api, options, config, sink)
    if live is not None:
        holder.append(bridge)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, bridge.request_shutdown, signal.Signals(sig).name)
    if before_run is not None:
        before_run(bridge)

    def on_key(ch: str) -> None:
        if ch == " " and live is not None:
            live.toggle_qr()
        elif ch in ("w", "W"):
            mode = bridge.toggle_spawn_mode()
            if mode is not None:
                settings.save_spawn_mode(options.directory, mode)
        elif ch == "\x04":  # Ctrl-D
            bridge.request_shutdown("Ctrl-D")

    try:
        if live is None:
            return await bridge.run()
        with key_presses(on_key):
            async with asyncio.TaskGroup() as tg:
                shown = tg.create_task(live.run(), name="display")
                code = await bridge.run()
                shown.cancel()
            return code
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def sandboxed(agent: AgentChoice) -> AgentChoice:
    """``--sandbox``: ``tether agent --sandbox`` (Bash under bubblewrap, which must be installed); the
    stock CLI gets its sandbox settings per session (:func:`prepare_options`); others cannot be."""
    if agent.kind == "tether":
        if shutil.which("bwrap") is None:
            raise AgentNotFound("--sandbox with tether agent needs bubblewrap (`bwrap`) on PATH. Install it "
                                "(Debian: apt-get install bubblewrap).")
        return AgentChoice((*agent.command, "--sandbox"), "tether", f"{agent.description} (Bash sandboxed)")
    if agent.kind == "claude":
        return AgentChoice(agent.command, "claude", f"{agent.description} (its sandbox forced on)")
    raise AgentNotFound("--sandbox works with --agent claude or --agent tether, not a custom command.")


def resolve_login(store: CredentialStore, server: str | None) -> tuple[str, Credentials]:
    try:
        url = store.server_url(server)
        creds = store.resolve(url)
    except CredentialsError as exc:
        raise StartupError(f"{exc.message} Run `tether login` to replace it.") from None
    if creds is None:
        raise StartupError(f"Not logged in to {url}. Run `tether login --server {url}` (or set TETHER_TOKEN), "
                           "or start everything on this machine with `tether up`.")
    return url, creds


async def main(args: RcArgs) -> int:
    console = None if args.as_json or not interactive() else Console(highlight=False)
    configure_logging(args.verbose, args.debug_file, console)
    store = CredentialStore()
    try:
        agent = sandboxed(choose_agent(args.agent)) if args.sandbox else choose_agent(args.agent)
        url, creds = resolve_login(store, args.server)
    except (AgentNotFound, StartupError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    return await start_bridge(url, creds, store, args, agent, console,
                              announce=lambda prepared: _announce(prepared, agent, console, args.as_json))


def _announce(prepared: Prepared, agent: AgentChoice, console: Console | None, as_json: bool) -> None:
    for note in prepared.notices:
        err.print(note)
    if console is not None:
        console.print(f"Agent: {agent.description}")
    elif not as_json:
        print(f"Agent: {agent.description}", flush=True)


def claim_directory(directory: pathlib.Path, server: str | None = None) -> DirectoryClaim:
    """This directory's bridge lock, or a :class:`StartupError` naming the bridge that holds it."""
    claim = DirectoryClaim(directory)
    holder = claim.acquire()
    if holder is not None:
        raise StartupError(busy_message(holder, server))
    return claim


async def start_bridge(url: str, creds: Credentials, store: CredentialStore, args: RcArgs, agent: AgentChoice,
                       console: Console | None, announce: Callable[[Prepared], None] | None = None, *,
                       claim: DirectoryClaim | None = None,
                       on_bridge: Callable[[Bridge], None] | None = None) -> int:
    """Claim the directory (unless the caller did), preflight, prepare the options for it, then run
    the bridge; 1 when the startup checks fail. ``announce`` runs once the options are ready,
    before the bridge starts; ``on_bridge`` gets the bridge before it runs."""
    directory = current_directory()
    try:
        claim = claim or claim_directory(directory, url)
    except StartupError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        return 1
    # Only a login read from the credentials file is written back when its tokens are refreshed.
    with claim:
        async with ApiClient(url, creds, store=store if creds.source == "file" else None) as api:
            try:
                pre = await preflight(api)
                prepared = await prepare_options(api, args, agent, pre.config.multi_session, directory)
            except StartupError as exc:
                err.print(f"[red]error:[/] {exc.message}")
                return 1
            prepared.options.claim = claim
            if announce is not None:
                announce(prepared)
            return await run_bridge(api, prepared.options, pre.config, as_json=args.as_json,
                                    verbose=args.verbose, console=console, before_run=on_bridge)


