"""nginx from Debian as a user process, configured from the shipped deploy/nginx files.

The http block holds the ``map`` of deploy/nginx/tether.conf, its ``upstream tether`` block with
the instance addresses swapped for the test's (and the shipped per-server parameters kept), and a
location that includes deploy/nginx/tether-proxy.conf verbatim. Nothing of the proxy behaviour is
written here: what the tests see is what an operator who copies deploy/nginx gets.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass

import httpx

from tests.support.server import ROOT, free_port, wait_until

DEPLOY = ROOT / "deploy" / "nginx"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def shipped_map() -> str:
    text = (DEPLOY / "tether.conf").read_text()
    match = re.search(r"^map \$http_upgrade .*?^}", text, re.S | re.M)
    assert match, "deploy/nginx/tether.conf defines the Connection-upgrade map"
    return match.group(0)


@dataclass(frozen=True)
class Upstream:
    """One instance behind nginx: its port, and whether it only takes over when the others fail."""

    port: int
    backup: bool = False


def shipped_upstream(instances: list[Upstream]) -> str:
    """deploy/nginx/tether.conf's ``upstream tether`` block with one ``server`` line per instance
    (each keeps the shipped line's parameters; ``backup`` is added where asked)."""
    text = (DEPLOY / "tether.conf").read_text()
    match = re.search(r"^upstream tether \{.*?^}", text, re.S | re.M)
    assert match, "deploy/nginx/tether.conf defines the upstream block"
    block = match.group(0)
    servers = re.findall(r"^\s*server (\S+)([^;]*);", block, re.M)
    assert servers, "the shipped upstream block lists its instances"
    params = servers[0][1]
    lines = [f"    server 127.0.0.1:{u.port}{params}{' backup' if u.backup else ''};" for u in instances]
    kept = [line for line in block.splitlines()[1:-1] if not re.match(r"^\s*server ", line)]
    return "\n".join(["upstream tether {", *kept, *lines, "}"])


def write_config(prefix: pathlib.Path, listen: int, instances: list[Upstream]) -> pathlib.Path:
    temp = "\n".join(f"    {name}_temp_path {prefix / name};" for name in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(f"""{user}daemon off;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} info;
events {{ worker_connections 512; }}
http {{
    log_format upstreams '$request_method $uri $status upstream=$upstream_addr';
    access_log {prefix / 'access.log'} upstreams;
{temp}
{shipped_map()}
{shipped_upstream(instances)}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://tether;
            include {DEPLOY / 'tether-proxy.conf'};
        }}
    }}
}}
""")
    return conf


class Nginx:
    def __init__(self, prefix: pathlib.Path, instances: list[Upstream]) -> None:
        self.prefix = prefix
        self.port = free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = write_config(prefix, self.port, instances)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def access_log(self) -> list[str]:
        """One line per request nginx finished: ``METHOD URI STATUS upstream=ADDR[, ADDR]``."""
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def routes_to(self, port: int) -> bool:
        """Whether a request through nginx now goes to the instance on ``port`` (per the access log)."""
        if not _answers(self.url):
            return False
        lines = self.access_log()
        return bool(lines) and lines[-1].endswith(f"upstream=127.0.0.1:{port}")

    def start(self) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed: run scripts/install-test-deps")
        check = subprocess.run([binary, "-t", "-p", str(self.prefix), "-c", str(self.conf)], capture_output=True,
                               text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen([binary, "-p", str(self.prefix), "-c", str(self.conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _answers(self.url), timeout=15, message="nginx to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self.proc = None


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
