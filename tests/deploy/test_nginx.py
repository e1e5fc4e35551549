"""The shipped nginx settings (deploy/nginx/) in front of a real `tether server`.

nginx from Debian runs as a user process with a prefix directory; its http block holds the
``map`` of deploy/nginx/tether.conf and a location that includes deploy/nginx/tether-proxy.conf
verbatim. A subscribe WebSocket, a v2 worker SSE stream, a client POST and the server's
login link go through it: frames arrive while the streams stay open (nothing buffered).
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.server.test_v2 import SSEReader, bridge, code_session
from tests.support.server import ROOT, ServerProcess, free_port, wait_until
from tests.support.worker import auth, subscribe, user_message

DEPLOY = ROOT / "deploy" / "nginx"
pytestmark = pytest.mark.anyio


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if found is None:
        raise RuntimeError("nginx is not installed: run scripts/install-test-deps")
    return found


def shipped_map() -> str:
    text = (DEPLOY / "tether.conf").read_text()
    match = re.search(r"^map \$http_upgrade .*?^}", text, re.S | re.M)
    assert match, "deploy/nginx/tether.conf defines the Connection-upgrade map"
    return match.group(0)


def write_config(prefix: pathlib.Path, listen: int, upstream: int) -> pathlib.Path:
    temp = "\n".join(f"    {name}_temp_path {prefix / name};" for name in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(f"""{user}daemon off;
worker_processes 1;
pid {prefix / 'nginx.pid'};
error_log {prefix / 'error.log'} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / 'access.log'};
{temp}
{shipped_map()}
    upstream tether {{
        server 127.0.0.1:{upstream} max_fails=1 fail_timeout=5s;
        keepalive 8;
    }}
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
    def __init__(self, prefix: pathlib.Path, upstream: int) -> None:
        self.prefix = prefix
        self.port = free_port()
        prefix.mkdir(parents=True, exist_ok=True)
        self.conf = write_config(prefix, self.port, upstream)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        binary = nginx_binary()
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


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Nginx]]:
    base = tmp_path_factory.mktemp("nginx")
    port = free_port()
    nginx = Nginx(base / "nginx", port)
    server = ServerProcess(base / "server", port=port, public_url=nginx.url, trusted_proxy="127.0.0.1",
                           limits={"rate_per_second": 0}).start()
    try:
        nginx.start()
        yield server, nginx
    finally:
        nginx.stop()
        server.stop()


async def test_subscribe_socket_and_client_post_through_nginx(proxied: tuple[ServerProcess, Nginx]) -> None:
    server, nginx = proxied
    token = server.token()
    async with httpx.AsyncClient(base_url=nginx.url, timeout=15) as client:
        sid = await code_session(client, token)
        sub = await subscribe(nginx.url.replace("http://", "ws://"), sid, token)
        try:
            for n in range(3):
                msg = user_message(f"through nginx {n}")
                r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(token))
                assert r.status_code == 200, r.text
                got = await sub.wait_for(lambda f, u=msg["uuid"]: f.get("uuid") == u)
                assert got["sequence_num"] == n + 1
            assert not sub.closed.done()  # the socket stays open through the proxy
        finally:
            await sub.close()


async def test_sse_worker_stream_is_not_buffered(proxied: tuple[ServerProcess, Nginx]) -> None:
    server, nginx = proxied
    token = server.token()
    async with httpx.AsyncClient(base_url=nginx.url, timeout=15) as client:
        sid = await code_session(client, token)
        b = await bridge(client, token, sid)
        stream = SSEReader(client, f"{nginx.url}/v1/code/sessions/{sid}/worker/events/stream", b["worker_jwt"])
        try:
            for n in range(3):  # each event arrives on its own, while the stream stays open
                msg = user_message(f"sse through nginx {n}")
                r = await client.post(f"/v1/sessions/{sid}/events", json={"events": [msg]}, headers=auth(token))
                assert r.status_code == 200, r.text
                got = await stream.wait_for(lambda e, u=msg["uuid"]: e["payload"].get("uuid") == u, timeout=5)
                assert got["sequence_num"] == n + 1
            assert stream.status == 200 and not stream.task.done()
        finally:
            await stream.close()


def test_the_server_hands_out_the_proxy_url(proxied: tuple[ServerProcess, Nginx]) -> None:
    server, nginx = proxied
    assert httpx.get(f"{nginx.url}/readyz", timeout=10).status_code == 200
    # --public-url: what the server hands out (login links, work secrets' api_base_url)
    assert server.login_link is not None and server.login_link.startswith(nginx.url), server.login_link
