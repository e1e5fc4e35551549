"""Connection-level guards (issue #11 items 5 and 7), against real server processes:

* ``X-Forwarded-For`` counts only from a configured proxy (``--trusted-proxy``, or loopback
  with ``--public-url``): by default a client reaching the server through loopback cannot pick
  its own address and slip past the per-address login limit;
* request headers must arrive within ``header_timeout_s`` (408, then closed), so half-open
  connections do not pile up; long polls, SSE streams and WebSockets outlive that deadline;
* past ``max_connections`` a request is refused with 503, ``Retry-After`` and the error shape.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
from collections.abc import Iterator

import httpx
import pytest
from tests.support.api import bearer, dispatch, mint_token, password_login
from tests.support.server import ServerProcess, wait_until
from websockets.sync.client import connect

PROMPT = {"type": "user", "message": {"role": "user", "content": "still there?"}}


def _logins_until_429(server: ServerProcess, attempts: int, *, rotate: bool) -> list[int]:
    statuses = []
    with httpx.Client(base_url=server.url, timeout=15) as browser:
        for n in range(attempts):
            forwarded = {"x-forwarded-for": f"203.0.113.{n if rotate else 7}"}
            browser.headers.update(forwarded)
            statuses.append(password_login(browser, "nobody@localhost", "wrong").status_code)
    return statuses


def test_forwarded_for_from_loopback_is_ignored_by_default(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "plain", limits={"login_per_minute": 3}) as srv:
        # rotating the header changes nothing: every attempt counts against 127.0.0.1
        assert _logins_until_429(srv, 4, rotate=True) == [401, 401, 401, 429]


def test_trusted_proxy_forwarded_for_is_believed(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "proxied", args=("--trusted-proxy", "127.0.0.1"),
                       limits={"login_per_minute": 3}) as srv:
        assert _logins_until_429(srv, 5, rotate=True) == [401] * 5  # five clients behind the proxy
        assert _logins_until_429(srv, 4, rotate=False) == [401, 401, 401, 429]  # one client, limited


def test_trusted_proxy_must_be_an_address(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "tether.cli.main", "server", "--data-dir", str(tmp_path),
                          "--trusted-proxy", "proxy.example"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--trusted-proxy" in out.stderr and "proxy.example" in out.stderr


# ---- header deadline ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Headers due within 1 s; long polls of 3 s (longer than that deadline)."""
    with ServerProcess(tmp_path_factory.mktemp("quick"), limits={"rate_per_second": 0}, header_timeout_s=1.0,
                       poll_timeout_s=3.0) as srv:
        yield srv


def _raw(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_unfinished_headers_are_answered_408_and_closed(quick: ServerProcess) -> None:
    with _raw(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        answer = _read_all(sock)  # returns once the server closed the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer
    assert json.loads(body)["error"]["type"] == "timeout_error"


def _open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_half_open_connections_do_not_pile_up(quick: ServerProcess) -> None:
    assert quick.proc is not None
    baseline = _open_descriptors(quick.proc.pid)
    socks = [_raw(quick) for _ in range(300)]
    try:
        for n, sock in enumerate(socks):
            if n % 2:
                sock.sendall(b"POST /login HTTP/1.1\r\nHost: x\r\n")  # half the headers; the rest: none
        wait_until(lambda: _open_descriptors(quick.proc.pid) <= baseline + 5, timeout=20, interval=0.1,
                   message="the server to close the half-open connections")
        for sock in socks[:4]:  # idle or half-way: each was told why
            assert _read_all(sock).startswith(b"HTTP/1.1 408")
    finally:
        for sock in socks:
            sock.close()


def test_long_poll_socket_and_stream_outlive_the_header_deadline(quick: ServerProcess) -> None:
    with httpx.Client(base_url=quick.url, timeout=15) as client:
        owner = mint_token(quick.data_dir)
        d = dispatch(client, owner)
        sub_url = f"{quick.ws_url}/v1/sessions/ws/{d.session_id}/subscribe"
        stream_url = f"/v1/code/sessions/{d.cse_id}/worker/events/stream"
        with connect(sub_url, additional_headers=bearer(owner), open_timeout=10) as ws, \
                client.stream("GET", stream_url, headers=bearer(d.worker_token)) as stream:
            lines = stream.iter_lines()
            assert next(lines) == ": connected"
            # a long poll with nothing to deliver takes poll_timeout_s = 3 s > header_timeout_s = 1 s
            poll = client.get(f"/v1/environments/{d.environment_id}/work/poll", headers=bearer(d.environment_secret))
            assert poll.status_code == 200 and poll.json() is None
            posted = client.post(f"/v1/sessions/{d.session_id}/events", json={"events": [PROMPT]},
                                 headers=bearer(owner))
            assert posted.status_code == 200, posted.text
            while json.loads(ws.recv(timeout=10))["type"] != "user":
                pass
            assert any("still there?" in line for line in lines if line.startswith("data:"))


# ---- connection cap ---------------------------------------------------------------------------------

def test_connection_cap_refuses_with_503(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "capped", max_connections=8, header_timeout_s=60.0) as srv:
        idle = [_raw(srv) for _ in range(8)]
        try:
            # the cap counts open connections: wait until the server has accepted all of them
            with httpx.Client(base_url=srv.url, timeout=15) as client:
                refused = wait_until(lambda: (r := client.get("/healthz")).status_code == 503 and r, timeout=10,
                                     interval=0.05, message="the cap to refuse")
                error = assert_error_shape(refused)
                assert error["type"] == "overloaded_error" and refused.headers["retry-after"] == "5"
        finally:
            for sock in idle:
                sock.close()
        with httpx.Client(base_url=srv.url, timeout=15) as client:
            wait_until(lambda: client.get("/healthz").status_code == 200, timeout=10, interval=0.05,
                       message="the server to accept again")


def assert_error_shape(resp: httpx.Response) -> dict[str, str]:
    assert resp.headers["content-type"] == "application/json", resp.headers
    body = resp.json()
    assert set(body) == {"type", "error"} and body["type"] == "error" and set(body["error"]) == {"type", "message"}
    error: dict[str, str] = body["error"]
    return error

