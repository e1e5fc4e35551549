"""`tether server`: run the server on the embedded default (SQLite) or a configured database;
``--detach`` runs it in the background, ``tether server stop`` / ``status`` find it through the
runtime file in its data directory (:mod:`tether.server.runtime`)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import pathlib
import time
from typing import Any

import typer
from rich.console import Console

from tether import __version__
from tether.cli.usage import command
from tether.server.config import Config, config_from_env, default_home

err = Console(stderr=True)
RUNNER_TOKEN_NAME = "tether server --runner"

app = typer.Typer(rich_markup_mode=None, help="Run the Tether server (SQLite under --data-dir by default); `stop` and `status` find a "
                       "running one through its data directory.",
                  invoke_without_command=True, no_args_is_help=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_config(host: str | None, port: int | None, data_dir: pathlib.Path | None, database_url: str | None,
                 public_url: str | None, tls_cert: str | None, tls_key: str | None,
                 trusted_proxy: str | None = None) -> Config:
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
    if trusted_proxy is not None:
        cfg.trusted_proxy = trusted_proxy
    if cfg.trusted_proxy:
        _check_proxies(cfg.trusted_proxy)
    if bool(tls_cert) != bool(tls_key):
        raise typer.BadParameter("--tls-cert and --tls-key go together.")
    cfg.tls_cert, cfg.tls_key = tls_cert, tls_key
    return cfg


def _check_proxies(value: str) -> None:
    for part in value.split(","):
        part = part.strip()
        if part == "*":
            continue
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise typer.BadParameter(f"--trusted-proxy: {part!r} is not an IP address or network "
                                     "(e.g. 127.0.0.1 or 10.0.0.0/8).") from None


def _check_redis_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise typer.BadParameter(f"--redis-url: {url!r} is not a Redis URL (redis://HOST:PORT/DB, rediss://… or "
                                 "unix:///path/to/redis.sock).")


async def prepare(cfg: Config, *, runner_token: bool = False) -> tuple[str, bool, str | None]:
    """Migrate, bootstrap the owner, and mint a one-time login link (and, for ``--runner``, the
    runner's personal token: the previous one is revoked, so restarts do not pile tokens up)."""
    from tether.server.service.accounts import open_accounts

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    async with open_accounts(cfg) as accounts:
        link, created = await accounts.owner_login_link()
        token = await accounts.owner_token(RUNNER_TOKEN_NAME, replace_named=True) if runner_token else None
    return link, created, token


DataDirOption = typer.Option(None, "--data-dir", metavar="DIR", help=f"Server data (default {default_home()}/server).")


@app.callback()
def serve(
    ctx: typer.Context,
    host: str = typer.Option(None, "--host", metavar="HOST", help="Interface to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", metavar="PORT", help="Port to listen on (default 8787)."),
    data_dir: pathlib.Path = DataDirOption,
    database_url: str = typer.Option(None, "--database-url", metavar="URL", help="SQLAlchemy URL (default: SQLite in --data-dir)."),
    redis_url: str = typer.Option(None, "--redis-url", metavar="URL",
                                  help="Redis for several instances on one database (redis://HOST:PORT/DB; env "
                                       "TETHER_REDIS_URL): fan-out, wake-ups, revocations and rate limits."),
    check: bool = typer.Option(False, "--check", help="Check that the database and Redis are reachable and the "
                                                      "schema is migrated, then exit (0 ok, 1 a check failed)."),
    as_json: bool = typer.Option(False, "--json", help="With --check: print one JSON object."),
    public_url: str = typer.Option(None, "--public-url", metavar="URL", help="URL clients use, when behind a reverse proxy "
                                   "(then X-Forwarded-For from loopback is believed)."),
    trusted_proxy: str = typer.Option(None, "--trusted-proxy", metavar="ADDR[,ADDR]",
                                      help="Reverse proxies (addresses or networks) whose X-Forwarded-For/-Proto are "
                                           "believed (env TETHER_TRUSTED_PROXY). Default: none, or loopback with "
                                           "--public-url."),
    tls_cert: str = typer.Option(None, "--tls-cert", metavar="PEM", help="PEM certificate to serve HTTPS directly."),
    tls_key: str = typer.Option(None, "--tls-key", metavar="PEM", help="PEM private key for --tls-cert."),
    worker_transport: str = typer.Option(None, "--worker-transport", metavar="v2|v1",
                                         help="What env-based work hands out (default v2)."),
    lease_ttl: float = typer.Option(None, "--lease-ttl", metavar="SECONDS",
                                    help="Seconds before an un-heartbeated lease lapses."),
    log_level: str = typer.Option("info", "--log-level", metavar="LEVEL", help="debug, info, warning or error."),
    detach: bool = typer.Option(False, "--detach", "-d",
                                help="Run in the background (log: server.log in the data dir); "
                                     "`tether server stop` stops it."),
    detached_child: bool = typer.Option(False, "--detached-child", hidden=True),
    runner: bool = typer.Option(False, "--runner", help="Also run a runner (`tether runner`) as a child process, "
                                                         "so sessions can be created on this server."),
    runner_agent: str = typer.Option(None, "--runner-agent", metavar="claude|tether|COMMAND",
                                     help="The runner's agent."),
    runner_capacity: int = typer.Option(None, "--runner-capacity", metavar="N", help="The runner's capacity."),
    runner_allow_local: list[pathlib.Path] = typer.Option([], "--runner-allow-local", metavar="DIR",
                                                          help="Repositories under DIR may be cloned by path."),
    runner_time_limit: float = typer.Option(None, "--runner-time-limit", metavar="SECONDS",
                                            help="Wall-clock limit per session."),
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    cfg = build_config(host, port, data_dir, database_url, public_url, tls_cert, tls_key, trusted_proxy)
    if not check:
        from tether.cli.server_ctl import ensure_data_dir

        if (problem := ensure_data_dir(cfg.data_dir)) is not None:
            raise typer.BadParameter(problem, param_hint="--data-dir")
    if redis_url is not None:
        cfg.redis_url = redis_url
    if cfg.redis_url:
        _check_redis_url(cfg.redis_url)
    if check:
        from tether.cli.server_check import run_check

        raise typer.Exit(run_check(cfg, as_json))
    if as_json:
        raise typer.BadParameter("--json goes with --check (or `tether server status --json`).")
    if worker_transport is not None:
        if worker_transport not in ("v1", "v2"):
            raise typer.BadParameter("--worker-transport must be v1 or v2.")
        cfg.worker_transport = worker_transport
    if lease_ttl is not None:
        cfg.lease_ttl_s = lease_ttl
    runner_flags: list[str] = []
    if runner:
        runner_flags = ["--runner"]
        for flag, value in (("--runner-agent", runner_agent), ("--runner-capacity", runner_capacity),
                            ("--runner-time-limit", runner_time_limit)):
            if value is not None:
                runner_flags += [flag, str(value)]
        for path in runner_allow_local:
            runner_flags += ["--runner-allow-local", str(path.resolve())]
    elif runner_agent or runner_capacity or runner_allow_local or runner_time_limit:
        raise typer.BadParameter("The --runner-* options need --runner.")
    if detach:
        from tether.cli.server_ctl import start_detached

        _warn_clear_text(cfg)  # here too: the detached child's warning goes only to server.log

        raise typer.Exit(start_detached(cfg, log_level, extra_args=runner_flags))
    runner_args: list[str] | None = None
    if runner:
        from tether.cli.runner_child import runner_argv

        runner_args = runner_argv(cfg.data_dir, agent=runner_agent, capacity=runner_capacity,
                                  allow_local=runner_allow_local, time_limit=runner_time_limit)
    raise typer.Exit(_run(cfg, log_level, detached=detached_child, runner_args=runner_args))


def _warn_clear_text(cfg: Config) -> None:
    if not _is_loopback(cfg.host) and not cfg.tls_cert and not cfg.public_url:
        err.print("[yellow]warning:[/] binding beyond loopback without TLS: tokens travel in clear text. "
                  "Use --tls-cert/--tls-key, or a TLS reverse proxy with --public-url.")


def _run(cfg: Config, log_level: str, *, detached: bool, runner_args: list[str] | None = None) -> int:
    import uvicorn

    from tether.server import runtime
    from tether.server.app import create_app
    from tether.server.http_protocol import guarded_protocol

    _warn_clear_text(cfg)
    lock = runtime.ServerLock(cfg.data_dir)
    if not lock.acquire():
        other = runtime.read_runtime(cfg.data_dir)
        where = f" (pid {other.pid}, {other.url})" if other else ""
        err.print(f"[red]error:[/] Another Tether server{where} is running from {cfg.data_dir}. Stop it with "
                  f"`tether server stop --data-dir {cfg.data_dir}`, or pass another --data-dir.")
        return 1
    from tether.cli.server_ctl import port_open

    if port_open(cfg.host, cfg.port):  # say so before migrating, rather than uvicorn's bind error after it
        lock.release()
        err.print(f"[red]error:[/] Port {cfg.port} is already in use. Pass --port, or stop what listens there.")
        return 1
    try:
        link, _created, token = asyncio.run(prepare(cfg, runner_token=runner_args is not None))
        print(f"Tether server on {cfg.url}  (data: {cfg.data_dir})", flush=True)
        print(f"Log in: {link}", flush=True)
        logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        app = create_app(cfg)
        child = None
        if runner_args is not None:
            from tether.cli.runner_child import RunnerChild, local_url

            assert token is not None
            child = RunnerChild(runner_args, token=token, data_dir=cfg.data_dir,
                                server_url=local_url(cfg.host, cfg.port, bool(cfg.tls_cert), cfg.public_url))

        class Server(uvicorn.Server):
            async def startup(self, sockets: list[Any] | None = None) -> None:
                await super().startup(sockets)
                if self.started:  # listening: now say where
                    runtime.write_runtime(cfg.data_dir, runtime.RuntimeInfo(
                        pid=os.getpid(), url=cfg.url, host=cfg.host, port=cfg.port,
                        data_dir=str(cfg.data_dir.resolve()), started_at=time.time(), version=__version__,
                        detached=detached, log_file=str(cfg.data_dir.resolve() / "server.log") if detached else None))
                if child is not None and not self.should_exit:
                    child.start()  # the server answers now: the runner can register

            async def shutdown(self, sockets: list[Any] | None = None) -> None:
                await super().shutdown(sockets)
                # here, not in a `finally` of run(): uvicorn re-raises SIGTERM/SIGINT once run() ends
                runtime.remove_runtime(cfg.data_dir, os.getpid())

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
            # headers within header_timeout_s (408), idle keep-alive closed after keep_alive_s,
            # at most max_connections open (503): see http_protocol.py
            http=guarded_protocol(cfg.header_timeout_s, cfg.max_connections), timeout_keep_alive=cfg.keep_alive_s,
            ws_max_size=cfg.limits.max_event_bytes + 64 * 1024, ws_ping_interval=20, ws_ping_timeout=20,
            # permessage-deflate keeps a zlib context per socket (~30 KiB idle) and compresses every
            # fanned-out frame once per subscriber: off, as measured in bench/relay.py.
            ws_per_message_deflate=False,
            proxy_headers=cfg.forwarded_allow_ips is not None, forwarded_allow_ips=cfg.forwarded_allow_ips,
            ssl_certfile=cfg.tls_cert, ssl_keyfile=cfg.tls_key, timeout_graceful_shutdown=5, access_log=log_level == "debug",
        )).run()
        return 0
    finally:
        runtime.remove_runtime(cfg.data_dir, os.getpid())
        lock.release()


@app.command("stop", **command(short_help="Stop the server running from the data directory."))
def stop(
    data_dir: pathlib.Path = DataDirOption,
    timeout: float = typer.Option(20.0, "--timeout", metavar="SECONDS",
                                  help="How long to wait for a clean stop before SIGKILL."),
) -> None:
    """Stop the server running from the data directory (started with --detach, or by `tether up`)."""
    from tether.cli.server_ctl import stop_server

    raise typer.Exit(stop_server(_data_dir(data_dir), timeout))


@app.command("status", **command(short_help="Whether a server runs from the data directory."))
def status(
    data_dir: pathlib.Path = DataDirOption,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Is a server running from the data directory, where, and how many bridges use it.

    Exit 0 when one runs, 1 when none does.
    """
    from tether.cli.server_ctl import show_status

    raise typer.Exit(show_status(_data_dir(data_dir), as_json))


def _data_dir(data_dir: pathlib.Path | None) -> pathlib.Path:
    return data_dir if data_dir is not None else config_from_env(Config()).data_dir
