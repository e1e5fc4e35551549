"""`tether up`: the embedded default in one command (FLOWS.md §1).

1. **Server.** A server already configured (``TETHER_SERVER``, or a stored login whose server
   answers) is used as is. Otherwise ``tether server`` starts as a **child process** on loopback
   with SQLite under ``$TETHER_HOME/server`` (or ``--data-dir``). A child rather than an in-process
   task: the server keeps its own event loop (SQLite runs inline on it), its own signal handling
   and logs (``server.log`` in the data dir), and the shutdown order is simple — the bridge tears
   down first (it still needs the server to stop work, archive and deregister), then the server
   gets SIGTERM.
2. **Login.** A working stored login for that server is kept; else a personal API token is
   minted through the server's data directory (like ``tether admin token create``) and stored.
3. **Bridge.** ``tether remote-control`` for the current directory (same-dir, a session created
   here), with the live display on a terminal and plain lines otherwise.
4. **Agent.** The stock ``claude`` when it is on PATH; else ``tether agent`` with the Anthropic
   API when ``ANTHROPIC_API_KEY`` is set; else ``tether agent --backend scripted`` (offline, said so).

It prints the web URL, a one-time login link and its QR code. Ctrl-C stops everything in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib

import typer

from tether.cli.remote_control import RcArgs, UsageProblem, validate


def up(
    port: int = typer.Option(8787, "--port", help="Port of the local server."),
    data_dir: pathlib.Path = typer.Option(None, "--data-dir", help="Server data (default $TETHER_HOME/server)."),
    agent: str = typer.Option(None, "--agent", metavar="claude|tether|COMMAND",
                              help="The agent (default: claude if on PATH, else tether agent)."),
    name: str = typer.Option(None, "--name", help="Title of the session created in this directory."),
    spawn: str = typer.Option(None, "--spawn", metavar="session|same-dir|worktree", help="Spawn mode."),
    capacity: int = typer.Option(None, "--capacity", metavar="N", help="Most sessions at once (default 32)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More output."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable bridge events."),
) -> None:
    args = RcArgs(name=name, spawn=spawn, capacity=capacity, verbose=verbose, as_json=as_json)  # type: ignore[arg-type]
    if spawn is not None and spawn not in ("session", "same-dir", "worktree"):
        raise typer.BadParameter("--spawn must be session, same-dir or worktree.")
    try:
        validate(args)
    except UsageProblem as exc:
        raise typer.BadParameter(str(exc)) from None
    from tether.cli.up_run import main
    from tether.client.credentials import tether_home

    home = data_dir or tether_home() / "server"
    with contextlib.suppress(KeyboardInterrupt):
        raise typer.Exit(asyncio.run(main(port, home, args, agent)))
    raise typer.Exit(130)


def register(app: typer.Typer) -> None:
    app.command("up", help="Server, bridge and web link in one command (the embedded default).")(up)
