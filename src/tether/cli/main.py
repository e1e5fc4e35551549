"""The `tether` command line: thin, it parses, builds Config and calls the library."""

from __future__ import annotations

import inspect
import sys
import typing

import typer

from tether import __version__
from tether.cli import admin, auth, chat, claude, remote_control, server, up

app = typer.Typer(
    name="tether",
    help="Tether: an open, self-hostable remote control for coding agents.",
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("server", help="Run the Tether server (SQLite under --data-dir by default).")(server.serve)
app.command("agent", help="Run Tether's coding agent: stream-json on stdin/stdout, like `claude -p`.", context_settings={"allow_extra_args": False, "ignore_unknown_options": False})(__import__("tether.cli.agent", fromlist=["agent"]).agent)
app.add_typer(admin.app, name="admin")
auth.register(app)  # login, logout, status
remote_control.register(app)  # remote-control, rc
up.register(app)
app.command("chat", help="Talk to a coding agent in this directory (also: `tether` alone).")(chat.chat)
app.command("claude", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                              "allow_interspersed_args": False})(claude.claude)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tether {__version__}")
        raise typer.Exit()


def root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
    **options: object,
) -> None:
    """Tether: watch and drive coding agents from a phone, a browser or another terminal.

    Without a command: an interactive session with an agent in this directory (`tether chat`)."""
    if ctx.invoked_subcommand is None:
        chat.chat(**options)  # type: ignore[arg-type]


# `tether --rc` is `tether chat --rc`: the root takes chat's options (one definition, not two copies).
_chat_params = inspect.signature(chat.chat).parameters.values()
root.__signature__ = inspect.signature(root).replace(  # type: ignore[attr-defined]
    parameters=[*list(inspect.signature(root).parameters.values())[:2], *_chat_params])
root.__annotations__ = {"ctx": typer.Context, "version": bool, **typing.get_type_hints(chat.chat)}
app.callback()(root)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
