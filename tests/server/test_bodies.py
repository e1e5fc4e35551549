"""Request bodies (issue #11 items 6 and 8): one budget for all bodies held at once, and a client
that goes away mid-body costs one log line, not a traceback."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import httpx
import pytest
from tests.support.api import assert_error, bearer, create_session, dispatch
from tests.support.server import ServerProcess, wait_until

MiB = 1 << 20
BUDGET = 3 * MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("bodies"), limits={
        "rate_per_second": 0, "max_inflight_body_bytes": BUDGET, "max_body_bytes": 2 * MiB,
        "max_file_bytes": 1 * MiB}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def token(server: ServerProcess) -> str:
    return server.token()


def metric(server: ServerProcess, name: str) -> float:
    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf"^tether_{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def start_body(server: ServerProcess, path: str, token: str, content_type: str, declared: int | None,
               first: bytes) -> socket.socket:
    """A request whose body stops after ``first`` (declared with Content-Length, or chunked)."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    framing = f"Content-Length: {declared}" if declared is not None else "Transfer-Encoding: chunked"
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: {content_type}\r\n{framing}\r\n\r\n").encode()
    body = first if declared is not None else b"%x\r\n%s\r\n" % (len(first), first)
    sock.sendall(head + body)
    return sock


def test_bodies_beyond_the_budget_get_429_until_it_frees(server: ServerProcess, token: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        session = create_session(client, token)["id"]
    path = f"/v1/sessions/{session}/events"
    slow = [start_body(server, path, token, "application/json", int(1.9 * MiB), b'{"events": ["' + b"x" * int(1.2 * MiB))
            for _ in range(2)]
    try:
        wait_until(lambda: metric(server, "body_bytes_in_flight") >= 2.4 * MiB, 30, 0.05, "both slow bodies held")
        prompt = {"type": "user", "message": {"role": "user", "content": "y" * (9 * MiB // 10)}}
        with httpx.Client(base_url=server.url, timeout=30) as client:
            refused = client.post(path, json={"events": [prompt]}, headers=bearer(token))
            assert_error(refused, 429, "rate_limit_error")
            assert int(refused.headers["retry-after"]) >= 1
            # small bodies still fit
            small = client.post(path, json={"events": [{**prompt, "message": {"role": "user", "content": "hi"}}]},
                                headers=bearer(token))
            assert small.status_code == 200, small.text
            for sock in slow:
                sock.close()
            wait_until(lambda: metric(server, "body_bytes_in_flight") == 0, 30, 0.05, "the budget to be given back")
            accepted = client.post(path, json={"events": [prompt]}, headers=bearer(token))
            assert accepted.status_code == 200, accepted.text
    finally:
        for sock in slow:
            sock.close()
    assert metric(server, "body_bytes_in_flight_peak") <= BUDGET
    assert metric(server, "body_budget_refusals") >= 1


@pytest.mark.parametrize("route, content_type, chunked", [
    ("files", "multipart/form-data; boundary=xyz", False),
    ("files", "multipart/form-data; boundary=xyz", True),
    ("sessions", "application/json", False),
    ("sessions", "application/json", True),
    ("ingress", "application/json", True),  # the fast path
])
def test_a_client_going_away_mid_body_is_one_log_line(server: ServerProcess, token: str, route: str,
                                                       content_type: str, chunked: bool) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as client:
        credential = token
        path = {"files": "/v1/files", "sessions": "/v1/sessions"}.get(route, "")
        if route == "ingress":
            d = dispatch(client, token)
            path, credential = f"/v1/session_ingress/session/{d.session_id}/events", d.worker_token
    first = (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.bin"\r\n'
             b"Content-Type: application/octet-stream\r\n\r\n" if route == "files" else b'{"events": ["')
    first += b"z" * 200_000
    log_line = f"client went away during POST {path}"
    seen = server.log_path.read_text().count(log_line)
    sock = start_body(server, path, credential, content_type, None if chunked else 600_000, first)
    try:
        wait_until(lambda: metric(server, "body_bytes_in_flight") > 0, 30, 0.05, "the server reading the body")
    finally:
        sock.close()
    wait_until(lambda: server.log_path.read_text().count(log_line) > seen, 30, 0.05, "the one log line")
    wait_until(lambda: metric(server, "body_bytes_in_flight") == 0, 30, 0.05, "the budget to be given back")
    log = server.log_path.read_text()
    assert "Traceback" not in log and "unhandled error" not in log, log[-3000:]
