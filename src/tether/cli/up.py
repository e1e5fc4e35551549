"""`tether up`: the embedded default in one command (docs/flows.md §1).

0. **Directory.** This directory's bridge lock first (:mod:`tether.bridge.claim`): when a bridge
   already runs here, `tether up` says which and stops before it touches any server.
1. **Server.** A server already configured (``TETHER_SERVER``) is used as is; so is one running
   from the data directory (``tether server --detach``, or another ``tether up``: its runtime
   file says where). Else a stored login whose server answers. Otherwise ``tether server``
   starts as a **child process** on loopback with SQLite under ``$TETHER_HOME/server`` (or
   ``--data-dir``). A child rather than an in-process task: the server keeps its own event loop
   (SQLite runs inline on it), its own signal handling and logs (``server.log`` in the data dir),
   and the shutdown order is simple — the bridge tears down first (it still needs the server to
   stop work and deregister), then the server gets SIGTERM. A port that answers but is not the
   data directory's server is refused with what to do, before any database is opened.
2. **Login.** A working stored login for that server is kept; else a personal API token is
   minted through the server's data directory (like ``tether admin token create``) and stored.
3. **Bridge.** ``tether remote-control`` for the current directory (same-dir, a session created
   here, or ``--continue`` for the one the last run left), with the live display on a terminal
   and plain lines otherwise.
4. **Agent.** The stock ``claude`` when it is on PATH; else ``tether agent`` with the Anthropic
   API when ``ANTHROPIC_API_KEY`` is set; else ``tether agent --backend scripted`` (offline, said
   so); ``--scenario FILE`` picks the offline model with that script.
5. **Exit.** A server this command started stops last — saying so when other bridges use it; after
   a bridge *failure* it keeps running for them (``tether server stop`` stops it).

It prints the web URL, a one-time login link and its QR code.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

import typer

from tether.cli.remote_control import RcArgs, UsageProblem, validate
from tether.cli.usage import command


def up(
    port: int = typer.Option(None, "--port", metavar="PORT", help="Port of the local server (default 8787)."),
    data_dir: pathlib.Path = typer.Option(None, "--data-dir", metavar="DIR", help="Server data (default $TETHER_HOME/server)."),
    agent: str = typer.Option(None, "--agent", metavar="claude|tether|COMMAND",
                              help="The agent (default: claude if on PATH, else tether agent)."),
    scenario: pathlib.Path = typer.Option(None, "--scenario", metavar="FILE",
                                          help="Use the offline scripted model with this scenario "
                                               "(see examples/scenarios)."),
    name: str = typer.Option(None, "--name", metavar="TITLE", help="Title of the session created in this directory."),
    spawn: str = typer.Option(None, "--spawn", metavar="session|same-dir|worktree", help="Spawn mode."),
    capacity: int = typer.Option(None, "--capacity", metavar="N", help="Most sessions at once (default 32)."),
    resume: bool = typer.Option(False, "--continue", "-c",
                                help="Resume the session this directory's last bridge left."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More output."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable bridge events."),
) -> None:
    args = RcArgs(name=name, spawn=spawn, capacity=capacity, resume=resume, verbose=verbose,  # type: ignore[arg-type]
                  as_json=as_json, resume_command="tether up --continue")
    if spawn is not None and spawn not in ("session", "same-dir", "worktree"):
        raise typer.BadParameter("--spawn must be session, same-dir or worktree.")
    try:
        validate(args)
    except UsageProblem as exc:
        raise typer.BadParameter(str(exc)) from None
    from tether.cli.server_ctl import ensure_data_dir
    from tether.cli.up_run import main, scenario_agent
    from tether.client.credentials import tether_home

    chosen = scenario_agent(scenario, agent) if scenario is not None else None
    home = data_dir or tether_home() / "server"
    if (problem := ensure_data_dir(home)) is not None:
        raise typer.BadParameter(problem, param_hint="--data-dir")
    with contextlib.suppress(KeyboardInterrupt):
        raise typer.Exit(asyncio.run(main(port, home, args, agent, chosen)))
    raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command("up", **command(help="Server, bridge and web link in one command (the embedded default).",
                                 short_help="Server, bridge and web link in one command."))(up)
