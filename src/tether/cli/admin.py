"""`tether admin`: scriptable administration on the server's machine (works on the data dir)."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import typer

from tether.server.config import Config, config_from_env, default_home

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


def _run(cfg: Config, body: Callable[[Any, Any], Awaitable[T]]) -> T:
    from tether.errors import TetherError
    from tether.server.auth.service import Auth
    from tether.server.store import Store

    async def main() -> T:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        store = Store(cfg.db_url)
        try:
            await store.open()
            auth = Auth(cfg, store)
            await auth.open()
            return await body(store, auth)
        finally:
            await store.close()

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

    async def body(store: Any, auth: Any) -> str:
        async with store.write() as tx:
            _org, user, _ = await auth.ensure_owner(tx, org_name=org, email=email, role=role)
            issued = await auth.issue(tx, "personal", user, ttl=None, name=name)
            await tx.insert_audit(user["org_id"], "admin", "token.create", issued.row["id"], {"name": name}, 0.0)
            return str(issued.secret)

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

    async def body(store: Any, auth: Any) -> str:
        if email:
            async with store.read() as tx:
                user = await tx.get_user_by_email(email)
            if user is None:
                raise typer.BadParameter(f"no user {email}")
        else:
            _org, user, _ = await auth.bootstrap()
        async with store.write() as tx:
            return str(await auth.login_link(tx, user))

    typer.echo(_run(cfg, body))


@app.command("users")
def users(
    data_dir: pathlib.Path = DataDir, database_url: str = DbUrl,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List users of every organisation."""

    async def body(store: Any, auth: Any) -> list[dict[str, Any]]:
        import sqlalchemy as sa

        from tether.server.store import tables as t

        async with store.read() as tx:
            rows = (await tx.conn.execute(
                sa.select(t.users.c.email, t.users.c.role, t.orgs.c.name, t.users.c.id)
                .join(t.orgs, t.orgs.c.id == t.users.c.org_id).order_by(t.users.c.created_at)
            )).all()
        return [{"email": r[0], "role": r[1], "org": r[2], "id": r[3]} for r in rows]

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
    from tether.server.auth.secrets import hash_password

    async def body(store: Any, auth: Any) -> None:
        async with store.write() as tx:
            user = await tx.get_user_by_email(email)
            if user is None:
                raise typer.BadParameter(f"no user {email}")
            await tx.update_user(user["id"], password_hash=hash_password(password))

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

    async def body(store: Any, auth: Any) -> bool:
        async with store.write() as tx:
            row = await tx.get_org_by_name(org)
            if row is None:
                raise typer.BadParameter(f"no organisation {org!r}")
            if allow_remote_control is not None:
                await tx.set_org_policy(row["id"], allow_remote_control)
                return allow_remote_control
            return bool(row["allow_remote_control"])

    value = _run(_config(data_dir, database_url), body)
    typer.echo(f"allow_remote_control: {'on' if value else 'off'}")


@app.command("rotate-keys")
def rotate_keys(data_dir: pathlib.Path = DataDir, database_url: str = DbUrl) -> None:
    """Make a new worker-token signing key active (old keys keep verifying until they are removed).

    A running server picks the new key up when it restarts.
    """

    async def body(store: Any, auth: Any) -> str:
        return str(await auth.rotate_keys())

    typer.echo(_run(_config(data_dir, database_url), body))
