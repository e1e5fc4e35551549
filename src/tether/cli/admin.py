"""`tether admin`: scriptable administration on the server's machine (works on the data dir)."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from tether.protocol.signing_keys import active_kid
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


def _config(data_dir: pathlib.Path | None, database_url: str | None, redis_url: str | None = None) -> Config:
    cfg = config_from_env(Config())
    if data_dir is not None:
        cfg.data_dir = data_dir
    if database_url is not None:
        cfg.database_url = database_url
    if redis_url is not None:
        cfg.redis_url = redis_url
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


RedisUrl = typer.Option(None, "--redis-url", help="The servers' Redis (default $TETHER_REDIS_URL): tell them at once.")


def _tell_servers(cfg: Config) -> None:
    """Running servers re-read the keys: at once through Redis, else within their key refresh."""
    from tether.server.scaleout import announce_keys_changed

    if asyncio.run(announce_keys_changed(cfg)):
        typer.echo("Running servers were told through Redis.", err=True)
    else:
        typer.echo(f"Running servers take it up within {cfg.key_refresh_s:g} s (their key refresh).", err=True)


@app.command("keys")
def keys(
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the worker-token signing keys (never their secrets), oldest first."""

    async def body(accounts: Accounts) -> list[dict[str, Any]]:
        ring = await accounts.auth.signing_keys()
        signing = active_kid([(r.kid, r.active) for r in ring])
        return [{"kid": r.kid, "active": r.kid == signing, "created_at": r.created_at} for r in ring]

    rows = _run(_config(data_dir, database_url), body)
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        typer.echo(f"{r['kid']:<16} {'active' if r['active'] else 'verifies':<8} {r['created_at']:.0f}")


@app.command("rotate-keys")
def rotate_keys(data_dir: pathlib.Path = DataDir, database_url: str = DbUrl, redis_url: str = RedisUrl) -> None:
    """Make a new worker-token signing key active and print its id; older keys keep verifying
    until `tether admin retire-key` removes them.

    Running servers sign with it from their next key refresh (30 s by default), at once when
    --redis-url (or $TETHER_REDIS_URL) names their Redis.
    """

    async def body(accounts: Accounts) -> str:
        return await accounts.auth.rotate_keys()

    cfg = _config(data_dir, database_url, redis_url)
    typer.echo(_run(cfg, body))
    _tell_servers(cfg)


@app.command("retire-key")
def retire_key(
    kid: str = typer.Argument(..., help="The key's id (see `tether admin keys`); not the active one."),
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl, redis_url: str = RedisUrl,
) -> None:
    """Remove a signing key: worker tokens it signed are refused on every server, and their open
    sockets and streams close (4003). Retire a key once its tokens have expired (4 h after the
    rotation), or at once if it leaked: bridges then take fresh tokens (docs/protocol.md §9.2).
    """

    async def body(accounts: Accounts) -> None:
        await accounts.auth.retire_key(kid)

    cfg = _config(data_dir, database_url, redis_url)
    _run(cfg, body)
    typer.echo(f"Retired {kid}.", err=True)
    _tell_servers(cfg)
