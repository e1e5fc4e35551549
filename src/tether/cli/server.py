"""`tether server`: run the server on the embedded default (SQLite) or a configured database."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import pathlib

import typer
from rich.console import Console

from tether.server.config import Config, config_from_env, default_home

err = Console(stderr=True)


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


async def prepare(cfg: Config) -> tuple[str, bool]:
    """Migrate, bootstrap the owner, and mint a one-time login link."""
    from tether.server.auth.service import Auth
    from tether.server.store import Store

    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_url)
    try:
        await store.open()
        auth = Auth(cfg, store)
        await auth.open()
        _org, owner, created = await auth.bootstrap()
        async with store.write() as tx:
            link = await auth.login_link(tx, owner)
        return link, created
    finally:
        await store.close()


def serve(
    host: str = typer.Option(None, "--host", help="Interface to bind (default 127.0.0.1)."),
    port: int = typer.Option(None, "--port", help="Port to listen on (default 8787)."),
    data_dir: pathlib.Path = typer.Option(None, "--data-dir", help=f"Server data (default {default_home()}/server)."),
    database_url: str = typer.Option(None, "--database-url", help="SQLAlchemy URL (default: SQLite in --data-dir)."),
    public_url: str = typer.Option(None, "--public-url", help="URL clients use, when behind a reverse proxy "
                                   "(then X-Forwarded-For from loopback is believed)."),
    trusted_proxy: str = typer.Option(None, "--trusted-proxy", help="ADDR[,ADDR] (or networks) of reverse proxies "
                                      "whose X-Forwarded-For/-Proto are believed (env TETHER_TRUSTED_PROXY). "
                                      "Default: none, or loopback with --public-url."),
    tls_cert: str = typer.Option(None, "--tls-cert", help="PEM certificate to serve HTTPS directly."),
    tls_key: str = typer.Option(None, "--tls-key", help="PEM private key for --tls-cert."),
    worker_transport: str = typer.Option(None, "--worker-transport", help="v1 or v2 for env-based work."),
    lease_ttl: float = typer.Option(None, "--lease-ttl", help="Seconds before an un-heartbeated lease lapses."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    import uvicorn

    from tether.server.app import create_app
    from tether.server.http_protocol import guarded_protocol

    cfg = build_config(host, port, data_dir, database_url, public_url, tls_cert, tls_key, trusted_proxy)
    if worker_transport is not None:
        if worker_transport not in ("v1", "v2"):
            raise typer.BadParameter("--worker-transport must be v1 or v2.")
        cfg.worker_transport = worker_transport
    if lease_ttl is not None:
        cfg.lease_ttl_s = lease_ttl
    if not _is_loopback(cfg.host) and not cfg.tls_cert and not cfg.public_url:
        err.print("[yellow]warning:[/] binding beyond loopback without TLS: tokens travel in clear text. "
                  "Use --tls-cert/--tls-key, or a TLS reverse proxy with --public-url.")
    link, created = asyncio.run(prepare(cfg))
    print(f"Tether server on {cfg.url}  (data: {cfg.data_dir})", flush=True)
    print(f"Log in: {link}", flush=True)
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(cfg)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:
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
        ssl_certfile=cfg.tls_cert,
        ssl_keyfile=cfg.tls_key, timeout_graceful_shutdown=5, access_log=log_level == "debug",
    )).run()
