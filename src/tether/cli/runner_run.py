"""What `tether runner` does once its flags are valid: login, preflight, the work-directory
settings, then the bridge's loop (:class:`tether.bridge.loop.Bridge`) registered as an environment of
kind ``cloud`` with :class:`~tether.bridge.workspace.Workspaces` preparing each session.
"""

from __future__ import annotations

import os
import pathlib
import socket

from rich.console import Console

from tether.bridge.loop import Bridge, BridgeOptions
from tether.bridge.spawner import AgentNotFound, choose_agent
from tether.bridge.startup import StartupError, preflight
from tether.bridge.workspace import RunnerSettings, WorkspaceError, Workspaces, find_bwrap, resolved_dirs
from tether.cli.bridge_run import configure_logging, interactive, resolve_login, run_bridge
from tether.cli.runner import RunnerArgs
from tether.client.api import ApiClient
from tether.client.credentials import CredentialStore, tether_home

err = Console(stderr=True, highlight=False, soft_wrap=True)


def runner_settings(args: RunnerArgs) -> tuple[RunnerSettings, str]:
    """(settings, a line about the sandbox); raises WorkspaceError for ``--sandbox on`` without bwrap."""
    root = pathlib.Path(os.path.realpath(args.data_dir or tether_home() / "runner"))
    root.mkdir(parents=True, exist_ok=True)
    bwrap, sandbox_line = find_bwrap(args.sandbox)
    hide = resolved_dirs([root, tether_home(), *args.hide])
    return RunnerSettings(root=root, limits=args.limits, bwrap=bwrap, local_roots=resolved_dirs(args.allow_local),
                          hide=hide), sandbox_line


async def main(args: RunnerArgs) -> int:
    console = None if args.as_json or not interactive() else Console(highlight=False)
    configure_logging(args.verbose, None, console)
    store = CredentialStore()
    try:
        agent = choose_agent(args.agent)
        url, creds = resolve_login(store, args.server)
        settings, sandbox_line = runner_settings(args)
    except (AgentNotFound, StartupError, WorkspaceError) as exc:
        err.print(f"[red]error:[/] {exc}")
        return 1
    workspaces = Workspaces(settings, agent.kind)
    stale = workspaces.wipe_stale()
    async with ApiClient(url, creds, store=store if creds.source == "file" else None) as api:
        try:
            pre = await preflight(api)
        except StartupError as exc:
            err.print(f"[red]error:[/] {exc.message}")
            return 1
        capacity = args.capacity if pre.config.multi_session else 1
        options = BridgeOptions(
            directory=settings.root, agent=agent, spawn_mode="same-dir", max_sessions=capacity,
            machine_name=args.name or socket.gethostname(), create_initial_session=False,
            session_timeout_s=settings.limits.wall_s, environment_kind="cloud", workspaces=workspaces,
            timeout_words="the runner's time limit",
        )
        lines = [f"Runner: agent {agent.description}; {sandbox_line}; limits: {settings.limits.describe()}",
                 f"Session directories under {settings.root / 'sessions'}"
                 + (f" (removed {len(stale)} left from an earlier run)" if stale else "")]
        if settings.local_roots:
            lines.append("Local repositories may be cloned from: " + ", ".join(settings.local_roots))
        if not args.as_json:
            for line in lines:
                (console.print(line) if console is not None else print(line, flush=True))

        def announce(bridge: Bridge) -> None:
            if args.as_json:
                bridge.sink.event("runner", " ".join(lines), agent=agent.description, sandbox=settings.bwrap,
                                  limits=settings.limits.describe(), root=str(settings.root),
                                  local_roots=list(settings.local_roots), removed_stale=len(stale))

        return await run_bridge(api, options, pre.config, as_json=args.as_json, verbose=args.verbose,
                                console=console, before_run=announce)
