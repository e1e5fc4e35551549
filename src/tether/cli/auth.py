"""`tether login`, `tether logout`, `tether status`: this machine's login to a Tether server.

* ``tether login [--server URL]`` runs the OAuth device flow (docs/protocol.md §1): it prints a code
  and the URL of the server's ``/device`` page, opens nothing, waits (the server's interval,
  longer after ``slow_down``) and stores the tokens in ``$TETHER_HOME/credentials.json`` (0600).
* ``tether login --with-token`` reads a personal API token from stdin (like
  ``gh auth login --with-token``), checks it with ``GET /v1/me`` and stores it.
* ``tether logout`` revokes an OAuth login on the server and deletes the stored credentials
  (a personal token is only forgotten: it may be in use elsewhere).
* ``tether status [--json]`` shows server, user, organisation, role and environments.
  Exit 0 when logged in and the server answers; 1 when not logged in, the login is no
  longer valid, or the server cannot be reached (the message says what to do next).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from tether.cli.usage import command
from tether.client.api import ApiClient
from tether.client.credentials import Credentials, CredentialsError, CredentialStore
from tether.errors import ApiError, ApiUnavailable, BridgeFatalError, NotLoggedIn, ProtocolError, TetherError
from tether.protocol.api_status import refused_login
from tether.protocol.server_url import ServerUrlError, is_plaintext_remote, normalize_server_url

out = Console(highlight=False, soft_wrap=True)
WIDE_TABLE_COLUMNS = 120
err = Console(stderr=True, highlight=False, soft_wrap=True)

ServerOption = typer.Option(None, "--server", metavar="URL",
                            help="Server URL (default: TETHER_SERVER, else the stored login, else "
                                 "http://127.0.0.1:8787).")


def register(app: typer.Typer) -> None:
    app.command("login", **command(help="Log this machine in to a Tether server (device code, or --with-token).",
                                  short_help="Log this machine in to a Tether server."))(login)
    app.command("logout", **command(help="Revoke and forget this machine's login."))(logout)
    app.command("status", **command(help="Show the server, who is logged in, and the environments.",
                                   short_help="Server, login and environments of this machine."))(status)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {message}")
    return typer.Exit(code)


def checked_server(server: str | None) -> str | None:
    """``--server`` as typed, normalised; a value that is no server URL is a usage error (exit 2)."""
    if server is None:
        return None
    try:
        return normalize_server_url(server)
    except ServerUrlError as exc:
        raise _fail(str(exc), 2) from None


def _unreachable(url: str, exc: ApiUnavailable) -> str:
    return (f"Cannot reach {url} ({exc.reason}). Is the server running? Start one with `tether server`, "
            "or point at yours with --server URL (or TETHER_SERVER).")


# ---- login ----------------------------------------------------------------------------------------

def login(
    server: str = ServerOption,
    with_token: bool = typer.Option(False, "--with-token",
                                    help="Read a personal API token from stdin instead of the device flow."),
) -> None:
    store = CredentialStore()
    try:
        url = store.server_url(server)
    except CredentialsError as exc:
        raise _fail(exc.message, 2) from None
    if is_plaintext_remote(url):
        err.print(f"[yellow]warning:[/] {url} is plain http to another machine: tokens travel in clear text. "
                  "Prefer https.")
    if store.env_token():
        err.print("[yellow]note:[/] TETHER_TOKEN is set and overrides the stored login until you unset it.")
    if with_token:
        token = _read_token()
        code = asyncio.run(_login_with_token(store, url, token))
    else:
        code = asyncio.run(_login_device(store, url))
    raise typer.Exit(code)


def _read_token() -> str:
    if sys.stdin.isatty():
        token = str(typer.prompt("Paste your personal API token", hide_input=True, default="",
                                 show_default=False))
    else:
        token = sys.stdin.read()
    token = token.strip()
    if not token:
        raise _fail("No token on stdin. Usage: tether login --with-token < token.txt", 2)
    if any(ch.isspace() for ch in token):
        raise _fail("Expected exactly one token on stdin.", 2)
    return token


async def _login_device(store: CredentialStore, url: str) -> int:
    async with ApiClient(url, store=None) as api:
        try:
            code = await api.request_device_code()
        except ApiUnavailable as exc:
            err.print(f"[red]error:[/] {_unreachable(url, exc)}")
            return 1
        except ApiError as exc:
            if exc.status == 429:
                wait = f"{int(exc.retry_after)} s" if exc.retry_after else "a minute"
                err.print(f"[red]error:[/] Too many login attempts from this machine; wait {wait} and try again.")
            else:
                err.print(f"[red]error:[/] {url} refused to start a device login: {exc.message}")
            return 1
        except ProtocolError as exc:
            err.print(f"[red]error:[/] {url} answered the device login strangely: {exc.message}")
            return 1
        out.print(f"To log in, open [bold]{code.verification_uri}[/] in a browser where you are logged in "
                  "to Tether, and enter this code:")
        out.print(f"\n    [bold]{code.user_code}[/]\n")
        out.print(f"Or open {code.verification_uri_complete}")
        out.print(f"Waiting for approval (the code expires in {int(code.expires_in // 60) or 1} min; "
                  "Ctrl-C to cancel)…")
        sys.stdout.flush()
        try:
            pair = await api.wait_for_device_token(code)
            creds = api.credentials_from(pair)
            api.use_credentials(creds)
            me = await api.me()
        except ApiUnavailable as exc:
            err.print(f"[red]error:[/] {_unreachable(url, exc)}")
            return 1
        except (ApiError, ProtocolError) as exc:
            err.print(f"[red]error:[/] {exc.message}")
            return 1
        creds = creds.with_identity(me)
        await _forget_previous(store, api, url)
        return _save_and_greet(store, creds)


async def _login_with_token(store: CredentialStore, url: str, token: str) -> int:
    creds = Credentials(server=url, access_token=token, kind="personal")
    async with ApiClient(url, creds, store=None) as api:
        try:
            me = await api.me()
        except ApiUnavailable as exc:
            err.print(f"[red]error:[/] {_unreachable(url, exc)}")
            return 1
        except BridgeFatalError as exc:
            if exc.status == 401:
                err.print(f"[red]error:[/] {url} did not accept this token. Create a personal API token "
                          "in the web settings, or on the server's machine with `tether admin token create`.")
            else:
                err.print(f"[red]error:[/] {exc.message}")
            return 1
        except (ApiError, ProtocolError) as exc:
            err.print(f"[red]error:[/] {exc.message}")
            return 1
        await _forget_previous(store, api, url)
    return _save_and_greet(store, creds.with_identity(me))


async def _forget_previous(store: CredentialStore, api: ApiClient, url: str) -> None:
    """Best effort: revoke the OAuth login being replaced on the same server."""
    try:
        previous = store.read_file()
    except CredentialsError:
        return
    if previous is None or previous.kind != "oauth" or previous.server != url:
        return
    for token in (previous.refresh_token, previous.access_token):
        if token:
            try:
                await api.revoke(token)
            except TetherError:
                return


def _save_and_greet(store: CredentialStore, creds: Credentials) -> int:
    try:
        store.save(creds)
    except CredentialsError as exc:
        err.print(f"[red]error:[/] {exc.message}")
        return 1
    who = creds.email or creds.user_id or "?"
    org = creds.org_name or creds.org_uuid or "?"
    out.print(f"[green]✓[/] Logged in to {creds.server} as [bold]{who}[/] ({org}, {creds.role or '?'}). "
              f"Credentials saved in {store.path}.")
    return 0


# ---- logout -------------------------------------------------------------------------------------

def logout() -> None:
    store = CredentialStore()
    try:
        stored = store.read_file()
    except CredentialsError as exc:
        store.delete()
        out.print(f"Removed an unreadable credentials file ({exc.message}).")
        raise typer.Exit(0) from None
    if stored is None:
        out.print("Not logged in: nothing to do.")
        if store.env_token():
            out.print("TETHER_TOKEN is set in the environment; unset it to stop using it.")
        raise typer.Exit(0)
    warning = asyncio.run(_revoke(stored)) if stored.kind == "oauth" else (
        "The personal API token was not revoked (it may be used elsewhere); revoke it in the web settings "
        "if you no longer need it.")
    store.delete()
    if warning:
        err.print(f"[yellow]note:[/] {warning}")
    out.print(f"Logged out of {stored.server}.")
    if store.env_token():
        out.print("TETHER_TOKEN is still set in the environment and is used until you unset it.")
    raise typer.Exit(0)


async def _revoke(creds: Credentials) -> str | None:
    async with ApiClient(creds.server) as api:
        try:
            for token in (creds.refresh_token, creds.access_token):
                if token:
                    await api.revoke(token)
        except ApiUnavailable as exc:
            return (f"Could not reach {creds.server} to revoke the tokens ({exc.message}); "
                    "they expire on their own.")
        except (ApiError, ProtocolError) as exc:
            return f"The server refused to revoke the tokens: {exc.message}"
    return None


# ---- status -------------------------------------------------------------------------------------

def status(
    server: str = ServerOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of the summary."),
) -> None:
    explicit = checked_server(server)
    store = CredentialStore()
    try:
        url = store.server_url(explicit)
        creds = store.resolve(url)
    except CredentialsError as exc:
        raise _status_error(as_json, store.environ.get("TETHER_SERVER") or server or "?", "credentials_error",
                            f"{exc.message} Run `tether login` to replace it.") from None
    if creds is None:
        raise _status_error(as_json, url, "not_logged_in",
                            f"Not logged in to {url}. Run `tether login --server {url}` "
                            "(or set TETHER_TOKEN to a personal API token).")
    code, report = asyncio.run(_gather(store, creds))
    if code != 0:
        raise _status_error(as_json, url, report["error"]["type"], report["error"]["message"])
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_status(report)
    raise typer.Exit(0)


def _status_error(as_json: bool, url: str, error_type: str, message: str) -> typer.Exit:
    if as_json:
        print(json.dumps({"server": url, "logged_in": False,
                          "error": {"type": error_type, "message": message}}, indent=2))
        return typer.Exit(1)
    return _fail(message)


async def _gather(store: CredentialStore, creds: Credentials) -> tuple[int, dict[str, Any]]:
    url = creds.server

    def error(error_type: str, message: str) -> tuple[int, dict[str, Any]]:
        return 1, {"error": {"type": error_type, "message": message}}

    async with ApiClient(url, creds, store=store if creds.source == "file" else None) as api:
        try:
            me = await api.me()
            environments = await api.list_environments()
        except ApiUnavailable as exc:
            return error("unreachable", _unreachable(url, exc))
        except BridgeFatalError as exc:
            if exc.status == 401:
                return error("login_invalid", refused_login(url, from_env=creds.source == "env"))
            return error(exc.error_type, exc.message)
        except (ApiError, ProtocolError, NotLoggedIn) as exc:
            return error(exc.error_type, exc.message)
        current = api.credentials or creds
    user: dict[str, Any] = me["user"] if isinstance(me.get("user"), dict) else {}
    org: dict[str, Any] = me["organization"] if isinstance(me.get("organization"), dict) else {}
    report: dict[str, Any] = {
        "server": url,
        "logged_in": True,
        "user": {"id": user.get("id"), "email": user.get("email")},
        "organization": {"uuid": me.get("organization_uuid") or org.get("uuid"), "name": org.get("name")},
        "role": me.get("role"),
        "policy": me.get("policy") or {},
        "credential": {
            "kind": current.kind, "source": current.source,
            "stored_in": str(store.path) if current.source == "file" else "TETHER_TOKEN",
            "expires_at": current.expires_at,
            "refreshable": current.can_refresh,
        },
        "environments": [{k: e.get(k) for k in (
            "id", "machine_name", "directory", "branch", "state", "online", "active_sessions", "max_sessions",
            "worker_type", "last_poll_at")} for e in environments],
    }
    return 0, report


def _ago_or_in(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 90:
        return f"{int(seconds)} s"
    if seconds < 5400:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{int(seconds // 86400)} days"


def _print_status(report: dict[str, Any]) -> None:
    cred = report["credential"]
    if cred["kind"] == "personal":
        how = "personal API token" + (" from TETHER_TOKEN" if cred["source"] == "env" else "")
    else:
        how = "device login"
        if cred["expires_at"]:
            left = cred["expires_at"] - time.time()
            how += (f", access token renews in {_ago_or_in(left)}" if left > 0
                    else ", access token renews on next use")
    policy = report["policy"]
    allowed = policy.get("allow_remote_control", True)
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Server", f"{report['server']} [green](reachable)[/]")
    grid.add_row("User", f"{report['user']['email'] or report['user']['id']}")
    grid.add_row("Organisation", f"{report['organization']['name'] or '?'} ({report['organization']['uuid']})")
    grid.add_row("Role", str(report["role"]))
    grid.add_row("Credential", how)
    grid.add_row("Remote Control", "allowed" if allowed else "[yellow]turned off by the organisation's policy[/]")
    out.print(grid)
    envs = [e for e in report["environments"] if e["state"] == "active"]
    retired = len(report["environments"]) - len(envs)
    if not envs:
        out.print("\nNo active environments" + (f" ({retired} deregistered or expired)" if retired else "")
                  + ". Start a bridge with `tether remote-control` in a project directory.")
        return
    online = sum(1 for e in envs if e["online"])
    title = f"Environments ({online} online of {len(envs)}" + (f"; {retired} retired not shown)" if retired else ")")
    if out.width < WIDE_TABLE_COLUMNS:  # a table of six columns folds every cell into shreds here
        out.print(f"\n{title}:")
        for e in envs:
            state = "[green]online[/]" if e["online"] else "[dim]offline[/]"
            out.print(f"  {e['id']}  {state}  {e['active_sessions']}/{e['max_sessions']} sessions")
            out.print(f"    {e['machine_name'] or '?'}:{e['directory'] or ''}", markup=False)
            if e["branch"]:
                out.print(f"    branch {e['branch']}", markup=False)
        return
    table = Table(title=title, title_justify="left")
    for name in ("Machine", "Directory", "Branch", "Status", "Sessions"):
        table.add_column(name, overflow="fold")
    table.add_column("Id", no_wrap=True)
    for e in envs:
        state = "[green]online[/]" if e["online"] else "[dim]offline[/]"
        table.add_row(str(e["machine_name"] or "?"), str(e["directory"] or ""), str(e["branch"] or ""), state,
                      f"{e['active_sessions']}/{e['max_sessions']}", str(e["id"]))
    out.print()
    out.print(table)
