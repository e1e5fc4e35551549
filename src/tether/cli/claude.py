"""``tether claude [claude args…]``: Claude Code's own terminal at the desk, the same conversation
from a phone (tether.claude.session).

Thin: the options that belong to Tether come first (``--server``, ``--claude-path``, ``--mirror``,
``--log-file``); everything else is Claude Code's and is passed on (``--`` ends Tether's options).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pathlib
import shutil
import socket
import sys
import tempfile
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from tether.claude.args import ClaudeArgs

CLAUDE_PATH_ENV = "TETHER_CLAUDE_PATH"


def _logging(log_file: pathlib.Path | None) -> None:
    """Never on the terminal: the TUI owns it."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    if log_file is None:
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.WARNING)
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    for noisy in ("httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def find_claude(path: str | None) -> str:
    """The ``claude`` executable: ``--claude-path``, ``$TETHER_CLAUDE_PATH``, else ``claude`` on PATH."""
    chosen = path or os.environ.get(CLAUDE_PATH_ENV)
    if chosen:
        if os.sep in chosen:
            if not os.access(chosen, os.X_OK):
                raise FileNotFoundError(f"{chosen} is not an executable.")
            return chosen
        found = shutil.which(chosen)
    else:
        found = shutil.which("claude")
    if not found:
        raise FileNotFoundError("`claude` is not on PATH. Install Claude Code (npm install -g "
                                "@anthropic-ai/claude-code), or pass --claude-path.")
    return found


def run_claude(claude_argv: list[str], *, server: str | None, claude_path: str | None, mirror: bool,
               log_file: pathlib.Path | None) -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        typer.echo("tether claude needs a terminal (it runs Claude Code's interactive TUI).", err=True)
        return 2
    from tether.claude.args import ClaudeArgsError, parse
    from tether.claude.hooks import SettingsError, write_settings

    try:
        args = parse(claude_argv)
        claude = find_claude(claude_path)
    except (ClaudeArgsError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    _logging(log_file)
    runtime = pathlib.Path(tempfile.mkdtemp(prefix="tether-claude-"))
    try:
        try:
            settings_file, hooks_file = write_settings(runtime, args.settings)
        except SettingsError as exc:
            typer.echo(f"error: {exc}", err=True)
            return 2
        cwd = pathlib.Path(os.path.realpath(os.getcwd()))
        return asyncio.run(_main(args, claude, cwd, settings_file, hooks_file, server=server, mirror=mirror))
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


async def _main(args: ClaudeArgs, claude: str, cwd: pathlib.Path, settings_file: pathlib.Path,
                hooks_file: pathlib.Path, *, server: str | None, mirror: bool) -> int:
    from tether.bridge.repl import RemoteControl, ReplBridgeConfig, ReplBridgeOptions
    from tether.bridge.startup import git_info
    from tether.claude.pty_runner import Terminal
    from tether.claude.session import ClaudeSession, ClaudeSettings
    from tether.client.credentials import CredentialStore
    from tether.protocol.claude_transcript import config_dir

    home = os.environ.get("HOME") or str(pathlib.Path.home())
    settings = ClaudeSettings(claude=claude, args=args, cwd=cwd, config_dir=pathlib.Path(config_dir(os.environ, home)),
                              settings_file=settings_file, hooks_file=hooks_file)
    session = ClaudeSession(settings, Terminal())
    name = next((o.values[0] for o in args.options if o.name in ("-n", "--name") and o.values), None)
    git = await git_info(cwd)
    options = ReplBridgeOptions(directory=cwd, machine_name=socket.gethostname(), branch=git.branch,
                                git_repo_url=git.remote_url, name=name, mirror=mirror, worker_type="claude_code")
    try:
        config = ReplBridgeConfig.from_env()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    session.rc = RemoteControl(session, options, store=CredentialStore(), server=server, config=config)
    return await session.run(name=name, mirror=mirror)


def claude(
    ctx: typer.Context,
    server: str = typer.Option(None, "--server", metavar="URL",
                               help="Tether server (default: TETHER_SERVER, else the stored login)."),
    claude_path: str = typer.Option(None, "--claude-path", metavar="PATH",
                                    help=f"The claude executable (default: ${CLAUDE_PATH_ENV}, else claude on PATH)."),
    mirror: bool = typer.Option(False, "--mirror",
                                help="Share outbound only: clients watch, never take over."),
    log_file: pathlib.Path = typer.Option(None, "--log-file", help="Write Tether's debug log here."),
) -> None:
    """Run Claude Code's own terminal here, shared with your Tether server: follow it from a phone or a
    browser, take the session over from there, and take it back with a key.

    Every argument after Tether's options is Claude Code's (`tether claude --model opus`,
    `tether claude --resume <uuid>`, `tether claude -- "fix the tests"`)."""
    raise typer.Exit(run_claude(list(ctx.args), server=server, claude_path=claude_path, mirror=mirror,
                                log_file=log_file))
