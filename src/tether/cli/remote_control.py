"""`tether remote-control` (alias `tether rc`): run agent sessions of this directory for a Tether server.

Thin: parses and validates the flags, then hands over to :mod:`tether.cli.bridge_run` (imported
only when the command runs, so that `tether agent` and the other commands start fast).
"""

from __future__ import annotations

import asyncio
import pathlib
from dataclasses import dataclass

import typer

from tether.cli.usage import command
from tether.protocol.bridge_policy import DEFAULT_CAPACITY, DEFAULT_SESSION_TIMEOUT_S, SPAWN_MODES, SpawnMode
from tether.protocol.messages import PERMISSION_MODES


@dataclass
class RcArgs:
    name: str | None = None
    spawn: SpawnMode | None = None
    capacity: int | None = None
    permission_mode: str | None = None
    session_timeout: float = DEFAULT_SESSION_TIMEOUT_S
    agent: str | None = None
    create_session_in_dir: bool = True
    resume: bool = False
    session_id: str | None = None
    verbose: bool = False
    debug_file: pathlib.Path | None = None
    as_json: bool = False
    server: str | None = None
    resume_command: str = "tether remote-control --continue"
    """What to run to resume, in the bridge's last words (``tether up`` says ``tether up --continue``)."""
    sandbox: bool = False


class UsageProblem(Exception):
    pass


def validate(args: RcArgs) -> None:
    """Flag combinations Claude Code refuses (docs/protocol.md §11.1)."""
    if args.capacity is not None and args.capacity < 1:
        raise UsageProblem("--capacity must be a positive integer.")
    if args.capacity is not None and args.spawn == "session":
        raise UsageProblem("--capacity cannot be used with --spawn session (a single session).")
    if args.resume and args.session_id:
        raise UsageProblem("--continue and --session-id cannot be used together.")
    if (args.resume or args.session_id) and (args.spawn is not None or args.capacity is not None):
        raise UsageProblem("--continue / --session-id resume one session; they cannot be used with --spawn "
                           "or --capacity.")
    if args.permission_mode is not None and args.permission_mode not in PERMISSION_MODES:
        raise UsageProblem(f"--permission-mode must be one of {', '.join(sorted(PERMISSION_MODES))}.")
    if args.session_timeout < 0:
        raise UsageProblem("--session-timeout must be 0 (off) or a number of seconds.")


def remote_control(
    name: str = typer.Option(None, "--name", metavar="TITLE", help="Title of the session created in this directory."),
    spawn: str = typer.Option(None, "--spawn", metavar="session|same-dir|worktree",
                              help="session: one session, then exit; same-dir (default): sessions in this "
                                   "directory; worktree: each session in its own git worktree."),
    capacity: int = typer.Option(None, "--capacity", metavar="N",
                                 help=f"Most sessions at once (default {DEFAULT_CAPACITY})."),
    permission_mode: str = typer.Option(None, "--permission-mode", metavar="MODE",
                                        help="Permission mode for the agents: " + ", ".join(sorted(PERMISSION_MODES))),
    session_timeout: float = typer.Option(DEFAULT_SESSION_TIMEOUT_S, "--session-timeout", metavar="SECONDS",
                                          help="Stop a session after this long (default 24 h; 0 = never)."),
    agent: str = typer.Option(None, "--agent", metavar="claude|tether|COMMAND",
                              help="The agent: the stock `claude` (default when on PATH), `tether` "
                                   "(tether agent), or a command line."),
    create_session_in_dir: bool = typer.Option(True, "--create-session-in-dir/--no-create-session-in-dir",
                                               help="Create a session in this directory at start."),
    resume: bool = typer.Option(False, "--continue", "-c", help="Resume the last session of this directory."),
    session_id: str = typer.Option(None, "--session-id", metavar="ID", help="Resume this session."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More output (and the agents' stderr)."),
    debug_file: pathlib.Path = typer.Option(None, "--debug-file", metavar="FILE", help="Write a debug log here."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable event lines instead of the display."),
    server: str = typer.Option(None, "--server", metavar="URL",
                               help="Server URL (default: TETHER_SERVER, else the stored login)."),
    sandbox: bool = typer.Option(False, "--sandbox", help="Sandbox the agents' commands: the stock claude with its "
                                                          "sandbox forced on; tether agent's Bash under bubblewrap "
                                                          "(only the session's directory is writable)."),
) -> None:
    from tether.cli.auth import checked_server

    server_url = checked_server(server)  # rejected like `tether login --server` rejects it
    if spawn is not None and spawn not in SPAWN_MODES:
        raise typer.BadParameter(f"--spawn must be one of {', '.join(SPAWN_MODES)}.")
    args = RcArgs(name=name, spawn=spawn, capacity=capacity,
                  permission_mode=permission_mode, session_timeout=session_timeout, agent=agent,
                  create_session_in_dir=create_session_in_dir, resume=resume, session_id=session_id,
                  verbose=verbose, debug_file=debug_file, as_json=as_json, server=server_url, sandbox=sandbox)
    try:
        validate(args)
    except UsageProblem as exc:
        raise typer.BadParameter(str(exc)) from None
    from tether.cli.bridge_run import main

    raise typer.Exit(asyncio.run(main(args)))


def register(app: typer.Typer) -> None:
    helptext = "Run agent sessions of this directory for a Tether server (the bridge)."
    app.command("remote-control", **command(help=helptext, short_help="Run this directory's agent sessions (the bridge)."))(remote_control)
    app.command("rc", **command(help=f"{helptext} Alias of remote-control.", hidden=True))(remote_control)
