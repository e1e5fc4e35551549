"""`tether server`: run the server on the embedded default (SQLite) or a configured database."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import pathlib
from typing import Any

import typer
from rich.console import Console

from tether.server.config import Config, config_from_env, default_home

err = Console(stderr=True)
RUNNER_TOKEN_NAME = "tether server --runner"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_config(host: str | None, port: int | None, data_dir: pathlib.Path | None, database_url: str | None,
                 public_url: str | None, tls_cert: str | None, tls_key: str | None) -> Config:
    cfg = config_from_env(Config())
    if host is not None:
        cfg.host = host
    if port is not None:
        cfg.port = port
    if data_dir is not None:
        cfg.data_dir = data_dir
    if database_url is not None:
        cfg.database_url = database_url
    if public_url is not None:
        cfg.public_url = public_url
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together.")
    cfg.tls_cert, cfg.tls_key = tls_cert, tls_key
    return cfg


async def prepare(cfg: Config, *, runner_token: bool = False) -> tuple[str, bool, str | None]:
    """Migrate, bootstrap the owner, and mint a one-time login link (and, for ``--runner``, the
    runner's personal token: the previous one is revoked, so restarts do not pile tokens up)."""
    from tether.server.auth.service import Auth
    from tether.server.store import Store

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_url)
    try:
        await store.open()
        auth = Auth(cfg, store)
        await auth.open()
        _org, owner, created = await auth.bootstrap()
        token = None
        async with store.write() as tx:
            link = await auth.login_link(tx, owner)
            if runner_token:
                for old in await tx.list_tokens(owner["id"], "personal"):
                    if old["name"] == RUNNER_TOKEN_NAME and not old["revoked"]:
                        await tx.update_token(old["id"], revoked=True)
                token = str((await auth.issue(tx, "personal", owner, ttl=None, name=RUNNER_TOKEN_NAME)).secret)
        return link, created, token
    finally:
        await store.close()


def serve(
    host: str = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port to listen on (default 8787)."),
    data_dir: pathlib.Path = typer.Option(None, "--data-dir", help=f"Server data (default {default_home()}/server)."),
    database_url: str = typer.Option(None, "--database-url", help="SQLAlchemy URL (default: SQLite in --data-dir)."),
    public_url: str = typer.Option(None, "--public-url", help="URL clients use, when behind a reverse proxy."),
    tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate to serve HTTPS directly."),
    tls_key: str = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
    worker_transport: str = typer.Option(None, "--worker-transport", help="v1 or v2 for env-based work."),
    lease_ttl: float = typer.Option(None, "--lease-ttl", help="Seconds before an un-heartbeated lease lapses."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
    runner: bool = typer.Option(False, "--runner", help="Also run a runner (`tether runner`) as a child process, "
                                                         "so sessions can be created on this server.",
                                rich_help_panel="Embedded runner"),
    runner_agent: str = typer.Option(None, "--runner-agent", metavar="claude|tether|COMMAND",
                                     help="The runner's agent.", rich_help_panel="Embedded runner"),
    runner_capacity: int = typer.Option(None, "--runner-capacity", metavar="N", help="The runner's capacity.",
                                        rich_help_panel="Embedded runner"),
    runner_allow_local: list[pathlib.Path] = typer.Option([], "--runner-allow-local", metavar="DIR",
                                                          help="Repositories under DIR may be cloned by path.",
                                                          rich_help_panel="Embedded runner"),
    runner_time_limit: float = typer.Option(None, "--runner-time-limit", metavar="SECONDS",
                                            help="Wall-clock limit per session.", rich_help_panel="Embedded runner"),
) -> None:
    import uvicorn

    from tether.server.app import create_app

    cfg = build_config(host, port, data_dir, database_url, public_url, tls_cert, tls_key)
    if worker_transport is not None:
        if worker_transport not in ("v1", "v2"):
            raise typer.BadParameter("--worker-transport must be v1 or v2.")
        cfg.worker_transport = worker_transport
    if lease_ttl is not None:
        cfg.lease_ttl_s = lease_ttl
    if not _is_loopback(cfg.host) and not cfg.tls_cert and not cfg.public_url:
        err.print("[yellow]warning:[/] binding beyond loopback without TLS: tokens travel in clear text. "
                  "Use --tls-cert/--tls-key, or a TLS reverse proxy with --public-url.")
    runner_args: list[str] = []
    if runner:
        from tether.cli.runner_child import runner_argv

        runner_args = runner_argv(cfg.data_dir, agent=runner_agent, capacity=runner_capacity,
                                  allow_local=runner_allow_local, time_limit=runner_time_limit)
    elif runner_agent or runner_capacity or runner_allow_local or runner_time_limit:
        raise typer.BadParameter("The --runner-* options need --runner.")
    link, created, token = asyncio.run(prepare(cfg, runner_token=runner))
    print(f"Tether server on {cfg.url}  (data: {cfg.data_dir})", flush=True)
    print(f"Log in: {link}", flush=True)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(cfg)
    child = None
    if runner:
        from tether.cli.runner_child import RunnerChild, local_url

        assert token is not None
        child = RunnerChild(runner_args, server_url=local_url(cfg.host, cfg.port, bool(cfg.tls_cert), cfg.public_url),
                            token=token, data_dir=cfg.data_dir)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets)
            if child is not None and not self.should_exit:
                child.start()  # the server answers now: the runner can register

        def handle_exit(self, sig: int, frame: object) -> None:
            if child is not None and child.stop_first(lambda: self._exit(sig, frame)):
                return  # the runner tears down first (it still needs the server), then we exit
            self._exit(sig, frame)

        def _exit(self, sig: int, frame: object) -> None:
            # End streams and long polls at once; uvicorn then closes sockets with 1012.
            app.state.ctx.begin_shutdown_threadsafe()
            super().handle_exit(sig, frame)  # type: ignore[arg-type]

    Server(uvicorn.Config(
        app, host=cfg.host, port=cfg.port, ws="websockets-sansio", log_level=log_level,
        ws_max_size=cfg.limits.max_event_bytes + 64 * 1024, ws_ping_interval=20, ws_ping_timeout=20,
        # permessage-deflate keeps a zlib context per socket (~30 KiB idle) and compresses every
        # fanned-out frame once per subscriber: off, as measured in bench/relay.py.
        ws_per_message_deflate=False,
        proxy_headers=True, forwarded_allow_ips=cfg.forwarded_allow_ips, ssl_certfile=cfg.tls_cert,
        ssl_keyfile=cfg.tls_key, timeout_graceful_shutdown=5, access_log=log_level == "debug",
    )).run()
