"""``tether`` (no subcommand) and ``tether chat``: an interactive session in this directory.

Thin: parses the flags and hands over to :func:`run_chat` (the REPL and the bridge are imported
only when it runs, so the other commands start fast).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import socket
import sys
from dataclasses import dataclass
from typing import Final

import typer

from tether.protocol.messages import PERMISSION_MODES

MIRROR_ENV: Final = "TETHER_MIRROR"


@dataclass
class ChatArgs:
    remote_control: bool = False
    name: str | None = None
    mirror: bool = False
    agent: str | None = None
    permission_mode: str | None = None
    model: str | None = None
    server: str | None = None
    perpetual: bool = False
    verbose: bool = False
    debug_file: pathlib.Path | None = None


def check(args: ChatArgs) -> None:
    if args.permission_mode is not None and args.permission_mode not in PERMISSION_MODES:
        raise typer.BadParameter(f"--permission-mode must be one of {', '.join(sorted(PERMISSION_MODES))}.")
    if args.mirror and args.perpetual:
        raise typer.BadParameter("--mirror and --perpetual cannot be used together (a mirror is env-less).")


def _logging(args: ChatArgs) -> None:
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if args.debug_file is not None:
        args.debug_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(args.debug_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.DEBUG)
    elif args.verbose:
        handler = logging.StreamHandler(sys.stderr)  # patched: printed above the prompt
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.setLevel(logging.INFO)
    else:
        handler = logging.NullHandler()  # the footer and the notices say what matters
        root.setLevel(logging.WARNING)
    root.addHandler(handler)
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run_chat(args: ChatArgs) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        typer.echo("tether chat needs a terminal. For scripts, use `tether agent -p --input-format stream-json "
                   "--output-format stream-json --verbose`.", err=True)
        return 2
    from tether.bridge.repl import RemoteControl, ReplBridgeConfig, ReplBridgeOptions
    from tether.bridge.session_host import AgentHandle
    from tether.bridge.spawner import AgentNotFound, choose_agent
    from tether.client.credentials import CredentialStore, tether_home
    from tether.repl.agent_link import AgentLink, make_agent
    from tether.repl.app import Repl, ReplSettings

    _logging(args)
    cwd = pathlib.Path(os.path.realpath(os.getcwd()))
    try:
        choice = choose_agent(args.agent)
        first = [make_agent(choice, str(cwd), permission_mode=args.permission_mode, model=args.model)]
        config = ReplBridgeConfig.from_env()
    except (AgentNotFound, ValueError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    home = tether_home()

    async def main() -> int:
        from tether.bridge.startup import git_info

        git = await git_info(cwd)
        options = ReplBridgeOptions(
            directory=cwd, machine_name=socket.gethostname(), branch=git.branch, git_repo_url=git.remote_url,
            name=args.name, mirror=args.mirror, perpetual=args.perpetual,
            worker_type={"claude": "claude_code", "tether": "tether_agent"}.get(choice.kind, "custom"),
            permission_mode=args.permission_mode)
        holder: list[Repl] = []
        description = first[0][1]

        def new_agent() -> AgentHandle:  # the first one was made above (to fail early); /clear makes more
            if first:
                return first.pop()[0]
            return make_agent(choice, str(cwd), permission_mode=args.permission_mode, model=args.model)[0]

        link = AgentLink(new_agent, lambda msg: holder[0].on_agent_message(msg))
        settings = ReplSettings(cwd=cwd, agent_description=description, permission_mode=args.permission_mode,
                                server=args.server, remote_control=args.remote_control or args.mirror,
                                name=args.name, mirror=args.mirror, history_file=_history_file(home))
        repl = Repl(settings, link, None)
        holder.append(repl)
        repl.rc = RemoteControl(repl, options, store=CredentialStore(), server=args.server, config=config)
        return await repl.run()

    return asyncio.run(main())


def _history_file(home: pathlib.Path) -> pathlib.Path | None:
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return home / "chat_history"


def chat(
    remote_control: bool = typer.Option(False, "--remote-control", "--rc",
                                        help="Share the session with your Tether server from the start."),
    name: str = typer.Option(None, "--name", metavar="TITLE", help="The session's title (never replaced by a derived one)."),
    mirror: bool = typer.Option(False, "--mirror", envvar=MIRROR_ENV,
                                help="Share outbound only: clients watch, never type, answer or interrupt."),
    agent: str = typer.Option(None, "--agent", metavar="claude|tether|COMMAND",
                              help="The agent: the stock `claude` (default when on PATH), `tether` (tether agent, "
                                   "in this process), or a command line speaking stream-json."),
    permission_mode: str = typer.Option(None, "--permission-mode", metavar="MODE",
                                        help="The agent's permission mode: " + ", ".join(sorted(PERMISSION_MODES))),
    model: str = typer.Option(None, "--model", metavar="MODEL", help="The agent's model."),
    server: str = typer.Option(None, "--server", metavar="URL",
                               help="Server for remote control (default: TETHER_SERVER, else the stored login)."),
    perpetual: bool = typer.Option(False, "--perpetual",
                                   help="Keep the shared session across restarts (v1 core, crash pointer)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show log lines above the prompt."),
    debug_file: pathlib.Path = typer.Option(None, "--debug-file", metavar="PATH", help="Write a debug log here."),
) -> None:
    """Talk to a coding agent in this directory; /rc shares the session with your phone or browser."""
    args = ChatArgs(remote_control=remote_control, name=name, mirror=mirror, agent=agent,
                    permission_mode=permission_mode, model=model, server=server, perpetual=perpetual,
                    verbose=verbose, debug_file=debug_file)
    check(args)
    raise typer.Exit(run_chat(args))
