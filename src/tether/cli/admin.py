"""`tether admin`: scriptable administration on the server's machine (works on the data dir)."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from tether.server.config import Config, config_from_env, default_home

if TYPE_CHECKING:  # the server's modules load only when a command runs (a fast `--help`)
    from tether.server.service.accounts import Accounts

app = typer.Typer(rich_markup_mode=None, help="Administer a Tether server from its own machine (no browser needed).",
                  no_args_is_help=True)
token_app = typer.Typer(rich_markup_mode=None, help="Personal API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")

T = TypeVar("T")
DataDir = typer.Option(None, "--data-dir", help=f"Server data directory (default {default_home()}/server).")
DbUrl = typer.Option(None, "--database-url", help="SQLAlchemy URL (default: SQLite in --data-dir).")


def _config(data_dir: pathlib.Path | None, database_url: str | None) -> Config:
    cfg = config_from_env(Config())
    if data_dir is not None:
        cfg.data_dir = data_dir
    if database_url is not None:
        cfg.database_url = database_url
    return cfg


def _run(cfg: Config, body: Callable[[Accounts], Awaitable[T]]) -> T:
    """``body(accounts)`` against the data directory's database (migrated first)."""
    from tether.errors import TetherError
    from tether.server.service.accounts import open_accounts

    async def main() -> T:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        async with open_accounts(cfg) as accounts:
            return await body(accounts)

    try:
        return asyncio.run(main())
    except TetherError as exc:  # e.g. a user of another organisation: a usage error, not a traceback
        raise typer.BadParameter(exc.message) from None


@token_app.command("create")
def token_create(
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl,
    org: str = typer.Option("default", "--org", help="Organisation name (created on first use)."),
    email: str = typer.Option("owner@localhost", "--user", help="User email (created on first use)."),
    role: str = typer.Option("owner", "--role", help="owner, member or viewer (for a new user)."),
    name: str = typer.Option("admin", "--name", help="A label for the token."),
) -> None:
    """Print a new personal API token on stdout (and nothing else)."""
    if role not in ("owner", "member", "viewer"):
        raise typer.BadParameter("--role must be owner, member or viewer.")

    async def body(accounts: Accounts) -> str:
        return await accounts.admin_token(org, email, role, name)

    typer.echo(_run(_config(data_dir, database_url), body))


@app.command("login-link")
def login_link(
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl,
    email: str = typer.Option(None, "--user", help="Whose link (default: the first owner)."),
    public_url: str = typer.Option(None, "--public-url", help="Server URL to put in the link."),
    port: int = typer.Option(None, "--port", help="Server port, when not the default."),
) -> None:
    """Print a fresh one-time login URL (for the server running from the data directory, unless
    --public-url or --port say otherwise)."""
    from tether.server.runtime import running_server

    cfg = _config(data_dir, database_url)
    if public_url:
        cfg.public_url = public_url
    elif port:
        cfg.port = port
    elif (running := running_server(cfg.data_dir)) is not None:
        cfg.public_url = running.url  # where it listens (its --public-url, if it has one)

    async def body(accounts: Accounts) -> str:
        return await accounts.admin_login_link(email)

    typer.echo(_run(cfg, body))


@app.command("users")
def users(
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List users of every organisation."""

    async def body(accounts: Accounts) -> list[dict[str, Any]]:
        return [{"email": r.email, "role": r.role, "org": r.org, "id": r.id} for r in await accounts.everyone()]

    rows = _run(_config(data_dir, database_url), body)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['email']:<32} {r['role']:<7} {r['org']}")


@app.command("set-password")
def set_password(
    email: str = typer.Argument(..., help="The user's email."),
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl,
    password: str = typer.Option(..., "--password", prompt=True, hide_input=True, confirmation_prompt=True),
) -> None:
    """Set a user's web password."""
    async def body(accounts: Accounts) -> None:
        await accounts.set_password(email, password)

    _run(_config(data_dir, database_url), body)
    typer.echo(f"Password set for {email}.")


@app.command("policy")
def policy(
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl,
    org: str = typer.Option("default", "--org", help="Organisation name."),
    allow_remote_control: bool = typer.Option(None, "--allow-remote-control/--deny-remote-control",
                                              help="Change the policy; omit to show it."),
) -> None:
    """Show or change the organisation's allow_remote_control policy."""

    async def body(accounts: Accounts) -> bool:
        return await accounts.org_policy(org, allow_remote_control)

    value = _run(_config(data_dir, database_url), body)
    typer.echo(f"allow_remote_control: {'on' if value else 'off'}")


@app.command("rotate-keys")
def rotate_keys(data_dir: pathlib.Path = DataDir, database_url: str = DbUrl) -> None:
    """Make a new worker-token signing key active (old keys keep verifying until they are removed).

    A running server picks the new key up when it restarts.
    """

    async def body(accounts: Accounts) -> str:
        return await accounts.auth.rotate_keys()

    typer.echo(_run(_config(data_dir, database_url), body))
