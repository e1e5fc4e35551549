"""The `tether` command line: thin, it parses, builds Config and calls the library."""

from __future__ import annotations

import inspect
import sys
import typing
from typing import Any

import typer

from tether import __version__
from tether.cli import admin, auth, chat, claude, remote_control, runner, server, sessions, up
from tether.cli.usage import command

app = typer.Typer(
    rich_markup_mode=None,  # plain Click help: wraps at any width, no <bool> placeholders
    name="tether",
    help="Tether: an open, self-hostable remote control for coding agents.",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(server.app, name="server", short_help="Run, stop or inspect the Tether server.")
app.command("agent", **command(help="Run Tether's coding agent: stream-json on stdin/stdout, like `claude -p`.", short_help="Tether's coding agent (stream-json, like `claude -p`).", context_settings={"allow_extra_args": False, "ignore_unknown_options": False}))(__import__("tether.cli.agent", fromlist=["agent"]).agent)
app.add_typer(admin.app, name="admin", short_help="Administer a server from its own machine.")
auth.register(app)  # login, logout, status
remote_control.register(app)  # remote-control, rc
up.register(app)
sessions.register(app)  # sessions, attach
runner.register(app)
app.command("chat", **command(help="Talk to a coding agent in this directory (also: `tether` alone).",
                              short_help="Talk to a coding agent here (also: `tether` alone)."))(chat.chat)
app.command("claude", **command(
    help="The real Claude Code terminal here, shared with your Tether server (phone, browser, other terminals).",
    short_help="The real Claude Code terminal, shared with Tether.",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                      "allow_interspersed_args": False}))(claude.claude)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tether {__version__}")
        raise typer.Exit()


_REMOTE = "Session on the server (--remote)"


def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    remote_prompt: str = typer.Option(None, "--remote", metavar="PROMPT", rich_help_panel=_REMOTE,
                                      help="Start a session with PROMPT on one of the server's runners and attach."),
    repo: str = typer.Option(None, "--repo", metavar="URL|PATH", rich_help_panel=_REMOTE,
                             help="With --remote: the repository the runner clones (default: this checkout's "
                                  "origin)."),
    branch: str = typer.Option(None, "--branch", metavar="BRANCH", rich_help_panel=_REMOTE,
                               help="With --remote: the branch or tag to check out."),
    title: str = typer.Option(None, "--title", metavar="TITLE", rich_help_panel=_REMOTE,
                              help="With --remote: the title of the new session."),
    as_json: bool = typer.Option(False, "--json", rich_help_panel=_REMOTE,
                                 help="With --remote: print the new session as JSON instead of attaching."),
    **options: Any,
) -> None:
    """Tether: watch and drive coding agents from a phone, a browser or another terminal.

    Without a command: an interactive session with an agent in this directory (`tether chat`)."""
    if remote_prompt is not None:
        if ctx.invoked_subcommand is not None:
            raise typer.BadParameter(f"--remote starts a session by itself; it cannot be used with "
                                     f"`{ctx.invoked_subcommand}`.")
        from tether.cli import remote

        raise typer.Exit(remote.run(remote_prompt, repo, branch, title, as_json, options.get("server")))
    if any(v is not None for v in (repo, branch, title)) or as_json:
        raise typer.BadParameter("--repo, --branch, --title and --json (before the command) go with --remote.")
    if ctx.invoked_subcommand is None:
        chat.chat(**options)


# `tether --rc` is `tether chat --rc`: the root takes chat's options (one definition, not two copies).
_own_params = list(inspect.signature(root).parameters.values())[:-1]
root.__signature__ = inspect.signature(root).replace(  # type: ignore[attr-defined]
    parameters=[*_own_params, *inspect.signature(chat.chat).parameters.values()])
root.__annotations__ = {"ctx": typer.Context, "version": bool, "remote_prompt": str, "repo": str, "branch": str,
                        "title": str, "as_json": bool, **typing.get_type_hints(chat.chat)}
app.callback()(root)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
