"""`tether runner`: run sessions created "on the server" (``tether --remote``, the web client's
"New session → on the server") in isolated work directories (docs/protocol.md §11.9).

Thin: parses and checks the flags, then hands over to :mod:`tether.cli.runner_run`.
"""

from __future__ import annotations

import asyncio
import pathlib
from dataclasses import dataclass, field

import typer

from tether.cli.usage import command
from tether.protocol.runner_policy import Limits, RunnerPolicyError, check_limits

DEFAULT_RUNNER_CAPACITY = 4
DEFAULT_TIME_LIMIT_S = 3600.0
SANDBOX_MODES = ("auto", "on", "off")


@dataclass
class RunnerArgs:
    server: str | None = None
    data_dir: pathlib.Path | None = None
    capacity: int = DEFAULT_RUNNER_CAPACITY
    agent: str | None = None
    sandbox: str = "auto"
    limits: Limits = field(default_factory=Limits)
    allow_local: list[pathlib.Path] = field(default_factory=list)
    hide: list[pathlib.Path] = field(default_factory=list)
    name: str | None = None
    as_json: bool = False
    verbose: bool = False


def check(args: RunnerArgs) -> None:
    if not 1 <= args.capacity <= 1000:
        raise typer.BadParameter("--capacity must be from 1 to 1000.")
    if args.sandbox not in SANDBOX_MODES:
        raise typer.BadParameter("--sandbox must be auto, on or off.")
    try:
        check_limits(args.limits)
    except RunnerPolicyError as exc:
        raise typer.BadParameter(str(exc)) from None
    for path in args.allow_local:
        if not path.is_dir():
            raise typer.BadParameter(f"--allow-local {path}: not a directory.")


def runner(
    server: str = typer.Option(None, "--server", metavar="URL",
                               help="Server URL (default: TETHER_SERVER, else the stored login)."),
    data_dir: pathlib.Path = typer.Option(None, "--data-dir",
                                          help="Where session directories live (default $TETHER_HOME/runner)."),
    capacity: int = typer.Option(DEFAULT_RUNNER_CAPACITY, "--capacity", metavar="N", help="Most sessions at once."),
    agent: str = typer.Option(None, "--agent", metavar="claude|tether|COMMAND",
                              help="The agent (default: claude if on PATH, else tether agent)."),
    sandbox: str = typer.Option("auto", "--sandbox", metavar="auto|on|off",
                                help="Run each agent under bubblewrap: auto (when `bwrap` is installed), on "
                                     "(refuse to start without it) or off."),
    cpu_limit: int = typer.Option(None, "--cpu-limit", metavar="SECONDS", help="CPU seconds per process."),
    memory_limit: int = typer.Option(None, "--memory-limit", metavar="MB",
                                     help="Address space per process (the stock claude needs 4096 or more)."),
    file_size_limit: int = typer.Option(None, "--file-size-limit", metavar="MB", help="Largest file a session "
                                                                                       "may write."),
    time_limit: float = typer.Option(DEFAULT_TIME_LIMIT_S, "--time-limit", metavar="SECONDS",
                                     help="Wall-clock time per session (default 1 h; 0 = none)."),
    allow_local: list[pathlib.Path] = typer.Option([], "--allow-local", metavar="DIR",
                                                   help="Repositories under DIR may be cloned by path (repeatable)."),
    hide: list[pathlib.Path] = typer.Option([], "--hide", metavar="DIR",
                                            help="A directory the sandboxed agents must not see (repeatable)."),
    name: str = typer.Option(None, "--name", help="Machine name shown to clients (default: the host name)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable event lines."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="More output."),
) -> None:
    args = RunnerArgs(server=server, data_dir=data_dir, capacity=capacity, agent=agent, sandbox=sandbox,
                      limits=Limits(cpu_s=cpu_limit, memory_mb=memory_limit, file_mb=file_size_limit,
                                    wall_s=time_limit or None),
                      allow_local=list(allow_local), hide=list(hide), name=name, as_json=as_json, verbose=verbose)
    check(args)
    from tether.cli.runner_run import main

    raise typer.Exit(asyncio.run(main(args)))


def register(app: typer.Typer) -> None:
    app.command("runner", **command(help="Run sessions created on the server, each in its own work directory "
                                         "(an environment of kind cloud).",
                                    short_help="Run the server's sessions, each in its own directory."))(runner)
