"""The `tether` command line: thin, it parses, builds Config and calls the library."""

from __future__ import annotations

import sys

import typer

from tether import __version__
from tether.cli import admin, auth, remote_control, server, sessions, up
from tether.cli.usage import command

app = typer.Typer(
    rich_markup_mode=None,  # plain Click help: wraps at any width, no <bool> placeholders
    name="tether",
    help="Tether: an open, self-hostable remote control for coding agents.",
    no_args_is_help=True,
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


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tether {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Tether: watch and drive coding agents from a phone, a browser or another terminal."""


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
