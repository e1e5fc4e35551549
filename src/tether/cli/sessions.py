"""`tether sessions` and `tether attach`: the organisation's sessions, and one of them live in this terminal.

* ``tether sessions [--all] [--json]``: id, honest state (worker connected / waiting for you /
  running / idle / offline / archived), title, machine, directory, last activity. Archived
  sessions only with ``--all``. Exit 0; 1 when the server cannot be reached or refuses the login.
* ``tether attach SESSION [--viewer]``: SESSION is an id in either costume (``session_…`` /
  ``cse_…``) or a unique prefix of a title. Exit 0 after /detach; 1 when the stream ended for
  another reason (4003, the session is gone, the server stayed away); 2 for a bad SESSION.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tether.cli.usage import command
from tether.client.api import ApiClient
from tether.client.credentials import CredentialsError, CredentialStore
from tether.errors import ApiUnavailable, BridgeFatalError, TetherError
from tether.protocol.api_status import refused_login
from tether.protocol.ids import session_body, to_compat_session_id
from tether.protocol.session_view import Ambiguous, Found, format_ago, resolve_session_ref, session_state

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)
LIST_LIMIT = 1000

ServerOption = typer.Option(None, "--server", metavar="URL",
                            help="Server URL (default: TETHER_SERVER, else the stored login).")


class Problem(Exception):
    """A user-facing failure: ``message`` says what to do next, ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def register(app: typer.Typer) -> None:
    app.command("sessions", **command(help="List the organisation's sessions and their state."))(sessions)
    app.command("attach", **command(help="Watch and drive a session from this terminal (--viewer: watch only).",
                                    short_help="Watch and drive a session from this terminal."))(attach)


def _client(server: str | None) -> ApiClient:
    try:
        store = CredentialStore()
        return ApiClient.from_store(store, server)
    except CredentialsError as exc:
        raise Problem(exc.message, 2) from None


def _explain(exc: TetherError, api: ApiClient) -> Problem:
    server = api.server
    from_env = api.credentials is not None and api.credentials.source == "env"  # TETHER_TOKEN
    if isinstance(exc, ApiUnavailable):
        return Problem(f"Cannot reach {server} ({exc.message}). Is the server running? "
                       "Point at yours with --server URL (or TETHER_SERVER).")
    if isinstance(exc, BridgeFatalError) and exc.status == 401:
        return Problem(refused_login(server, from_env=from_env))
    if isinstance(exc, BridgeFatalError) and exc.status == 403:
        return Problem(f"{server} refused this: {exc.message}")
    return Problem(exc.message)


def _run(body: Any, server: str | None) -> int:
    """Run ``body(api)``; every expected failure becomes a message on stderr and an exit code."""
    async def main() -> int:
        async with _client(server) as api:
            try:
                return int(await body(api))
            except TetherError as exc:
                raise _explain(exc, api) from None

    try:
        return asyncio.run(main())
    except Problem as problem:
        err.print(f"[red]error:[/] {escape(problem.message)}")
        return problem.code


# ---- tether sessions ------------------------------------------------------------------------------

def sessions(
    show_all: bool = typer.Option(False, "--all", "-a", help="Include archived sessions."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array instead of a table."),
    server: str = ServerOption,
) -> None:
    async def body(api: ApiClient) -> int:
        rows = await _session_rows(api, show_all)
        if as_json:
            out.print_json(json.dumps(rows))
        elif not rows:
            out.print("No sessions." + ("" if show_all else " (Archived ones: --all.)"))
        else:
            out.print(_table(rows, out.width))
        return 0

    raise typer.Exit(_run(body, server))


async def _session_rows(api: ApiClient, show_all: bool) -> list[dict[str, Any]]:
    page = await api.list_sessions(limit=LIST_LIMIT)
    envs = {e.get("id"): e for e in await api.list_environments()}
    now = datetime.now(UTC)
    rows = []
    for s in page.get("data") or []:
        if not isinstance(s, dict):
            continue
        state = session_state(s)
        if state == "archived" and not show_all:
            continue
        env = envs.get(s.get("environment_id")) or {}
        rows.append({
            "id": s.get("id"), "title": s.get("title") or "", "state": state,
            "session_status": s.get("session_status"), "machine": env.get("machine_name"),
            "directory": env.get("directory"), "branch": env.get("branch"),
            "environment_id": s.get("environment_id"),
            "worker_connected": bool((s.get("worker") or {}).get("connected")),
            "environment_online": (s.get("environment") or {}).get("online"),
            "last_activity": s.get("updated_at"), "last_activity_ago": _ago(s.get("updated_at"), now),
            "last_sequence_num": s.get("last_sequence_num"),
        })
    return rows


def _ago(iso: object, now: datetime) -> str | None:
    if not isinstance(iso, str):
        return None
    try:
        then = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=UTC)
    return format_ago(max(0.0, (now - then).total_seconds()))


_STATE_STYLE = {"waiting for you": "bold yellow", "running": "green", "worker connected": "cyan",
                "offline": "red", "archived": "dim", "idle": ""}


DIRECTORY_MAX = 40
"""The widest directory the one-line table shows; longer paths keep their end (``…/project/sub``)."""
TITLE_MIN = 20
"""The one-line table is used only when the title keeps at least this much room to wrap in."""
GAP = 2
"""Columns are two spaces apart (no box, no edge padding)."""


def shorten_left(path: str, width: int) -> str:
    """``path`` in at most ``width`` characters, keeping its end — the part that tells directories
    apart: whole trailing components after ``…/``, else the tail of the last one."""
    if len(path) <= width:
        return path
    parts = [p for p in path.split("/") if p]
    kept = ""
    for part in reversed(parts):
        candidate = f"{part}/{kept}" if kept else part
        if len("…/") + len(candidate) > width:
            break
        kept = candidate
    return f"…/{kept}" if kept else "…" + path[-(width - 1):]


def _table(rows: list[dict[str, Any]], width: int) -> Table:
    """One line per session when it fits ``width``; else two lines per session (id and title; state
    and last activity; machine and directory), so that an 80-column terminal shows every field."""
    ids = max(len(r["id"]) for r in rows)
    states = max(len("STATE"), *(len(r["state"]) for r in rows))
    agos = max(len("LAST ACTIVITY"), *(len(r["last_activity_ago"] or "—") for r in rows))
    machines = max(len("MACHINE"), *(len(r["machine"] or "—") for r in rows))
    dirs = max(len("DIRECTORY"), *(len(shorten_left(r["directory"] or "—", DIRECTORY_MAX)) for r in rows))
    if ids + states + agos + machines + dirs + TITLE_MIN + 5 * GAP <= width:
        return _one_line_table(rows)
    second = max(len("STATE / ACTIVE"), states, *(len(r["last_activity_ago"] or "—") for r in rows))
    return _two_line_table(rows, ids, where_width=max(4, width - ids - second - 2 * GAP))


def _state_cell(state: str) -> str:
    style = _STATE_STYLE.get(state, "")
    return f"[{style}]{state}[/]" if style else state


def _one_line_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for name in ("ID", "STATE", "TITLE", "MACHINE", "DIRECTORY", "LAST ACTIVITY"):
        table.add_column(name, no_wrap=name != "TITLE", overflow="fold" if name == "TITLE" else "ellipsis")
    for r in rows:
        table.add_row(r["id"], _state_cell(r["state"]), escape(r["title"]), escape(r["machine"] or "—"),
                      escape(shorten_left(r["directory"] or "—", DIRECTORY_MAX)), r["last_activity_ago"] or "—")
    return table


def _two_line_table(rows: list[dict[str, Any]], ids: int, where_width: int) -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("ID / TITLE", no_wrap=False, overflow="fold", min_width=ids)  # ids stay whole (copyable)
    table.add_column("STATE / ACTIVE", no_wrap=True)
    table.add_column("MACHINE / DIRECTORY", no_wrap=True, overflow="ellipsis", max_width=where_width)
    for i, r in enumerate(rows):
        if i:
            table.add_row()  # a blank line between sessions
        title = escape(r["title"]) if r["title"] else "[dim](untitled)[/]"
        machine = r["machine"] or "—"
        if len(machine) > where_width:
            machine = machine[:where_width - 1] + "…"
        where = shorten_left(r["directory"] or "—", where_width)
        table.add_row(f"{r['id']}\n{title}", f"{_state_cell(r['state'])}\n{r['last_activity_ago'] or '—'}",
                      f"{escape(machine)}\n{escape(where)}")
    return table


# ---- tether attach --------------------------------------------------------------------------------

def attach(
    session: str = typer.Argument(..., metavar="SESSION", help="Session id (session_ID or cse_ID) or a unique "
                                                                 "prefix of its title."),
    viewer: bool = typer.Option(False, "--viewer", help="Watch only: no prompts, answers or interrupts; "
                                                        "reconnects forever."),
    server: str = ServerOption,
) -> None:
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not interactive and not viewer:
        err.print("[red]error:[/] `tether attach` needs a terminal to type in. To follow a session from a script, "
                  "use `tether attach --viewer SESSION`.")
        raise typer.Exit(2)

    async def body(api: ApiClient) -> int:
        return await _attach(api, session, viewer, interactive)

    raise typer.Exit(_run(body, server))


async def find_session(api: ApiClient, ref: str) -> dict[str, Any]:
    if session_body(ref) is not None:
        try:
            return await api.get_session(to_compat_session_id(ref))
        except BridgeFatalError as exc:
            if exc.status == 404:
                raise Problem(f"No session {ref} in your organisation. List them with `tether sessions --all`.",
                              2) from None
            raise
    page = await api.list_sessions(limit=LIST_LIMIT)
    found = resolve_session_ref(ref, [s for s in page.get("data") or [] if isinstance(s, dict)])
    if isinstance(found, Found):
        return dict(found.session)
    if isinstance(found, Ambiguous):
        names = ", ".join(f"{s.get('id')} ({s.get('title')!r})" for s in found.candidates[:5])
        raise Problem(f"{ref!r} matches {len(found.candidates)} sessions: {names}. Use more of the title, "
                      "or the id.", 2)
    raise Problem(f"No session has an id or a title starting with {ref!r}. List them with `tether sessions`.", 2)


async def _attach(api: ApiClient, ref: str, viewer: bool, interactive: bool) -> int:
    from tether.remote.manager import RemoteSessionManager
    from tether.remote.terminal import AttachApp, TerminalView, follow_without_terminal

    me = await api.me()
    session = await find_session(api, ref)
    console = Console(highlight=False)
    if me.get("role") == "viewer" and not viewer:
        viewer = True
        console.print("[yellow]Your role in this organisation is viewer: watching only.[/]")
    if session.get("session_status") == "archived" and not viewer:
        viewer = True
        console.print("[yellow]This session is archived: watching only.[/]")
    view = TerminalView(console, str(session.get("title") or ""), str(session.get("session_status") or "idle"))
    manager = RemoteSessionManager(api, session, view, viewer=viewer)
    mode = "watching" if viewer else "attached to"
    console.print(f"[bold]{mode} {escape(str(session.get('title') or session['id']))}[/] [dim]({session['id']}"
                  f"{'' if viewer else ' · /help for keys, /detach to leave'})[/]")
    await manager.load_history()
    if interactive:
        stop = await AttachApp(manager, view).run()
    else:
        stop = await follow_without_terminal(manager)
    return 0 if stop.reason == "stopped" else 1
