"""``tether server --check``: the database and Redis reachable, the schema migrated (server/preflight.py).

Exit 0 when every check passed, 1 when one failed. ``--json`` prints one object:
``{"ok": bool, "checks": [{"name", "ok", "target", "detail", "elapsed_ms"}]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from rich.console import Console
from rich.table import Table

from tether.server.config import Config

out = Console(highlight=False, soft_wrap=True)


def run_check(cfg: Config, as_json: bool) -> int:
    from tether.server.preflight import run_checks

    if cfg.database_url is None:  # the embedded default: a file that need not exist yet
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
    live = not as_json and out.is_terminal
    what = "Checking the database" + (" and Redis" if cfg.redis_url else "") + " …"
    with out.status(what, spinner="dots") if live else contextlib.nullcontext():
        checks = asyncio.run(run_checks(cfg.db_url, cfg.redis_url))
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [c.as_json() for c in checks]}, indent=2))
        return 0 if ok else 1
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("Check", style="bold")
    table.add_column("")
    table.add_column("Target", overflow="fold")
    table.add_column("Result", overflow="fold")
    table.add_column("ms", justify="right")
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.target, c.detail, f"{c.elapsed_ms:.0f}")
    out.print(table)
    if not cfg.redis_url:
        out.print("Redis: not configured (one instance; --redis-url for several).")
    out.print("[green]All checks passed.[/]" if ok else "[red]A check failed.[/]")
    return 0 if ok else 1
