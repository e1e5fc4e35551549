"""The shipped nginx settings (deploy/nginx/) in front of a real `tether server`.

nginx from Debian runs as a user process configured from deploy/nginx (tests/support/nginx.py).
A subscribe WebSocket, a v2 worker SSE stream, a client POST and the server's login link go
through it: frames arrive while the streams stay open (nothing buffered).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.server.test_v2 import SSEReader, bridge, code_session
from tests.support.nginx import Nginx, Upstream
from tests.support.server import ServerProcess, free_port
from tests.support.worker import auth, subscribe, user_message

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Nginx]]:
    base = tmp_path_factory.mktemp("nginx")
    port = free_port()
    nginx = Nginx(base / "nginx", [Upstream(port)])
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
