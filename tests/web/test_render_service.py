"""``POST /web/render`` on a real server: no input stalls the server (issue #11 item 1).

It used to render on the event loop: one 48 KB diff of 8,000 lines blocked every request for
~10 s, and any logged-in viewer could send it. What is measured here is the server's own
event-loop stall (its monitor, tests/support/server.py), not wall time, so a loaded machine
does not decide the outcome; the suite-wide guard (tests/conftest.py) fails the test on any
stall over 100 ms, and each test checks the report itself too.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.api import assert_error, bearer
from tests.support.server import ServerProcess, read_stalls
from tether.server.web import render

QUADRATIC_DIFF = {"type": "diff", "old": "a\nb\n" * 2000, "new": "b\na\n" * 2000, "path": "x.txt"}
TABLE = "| a | b |\n|---|---|\n" + "| x | y |\n" * 9000


@pytest.fixture(scope="module")
def viewer(server: ServerProcess) -> str:
    return server.token(user="viewer@render", role="viewer")


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def _render(client: httpx.Client, token: str, items: list[Any]) -> httpx.Response:
    return client.post("/web/render", json={"items": items}, headers=bearer(token))


def test_heavy_renders_never_stall_the_loop(server: ServerProcess, client: httpx.Client, viewer: str) -> None:
    before = len(read_stalls(server.stall_report))
    heavy = [
        [QUADRATIC_DIFF],
        [{"type": "markdown", "text": TABLE}],
        [{"type": "markdown", "text": "[" * 90_000}],
        [{"type": "diff", "old": "x\n" * 4000, "new": "x\n" * 2000 + "y\n" + "x\n" * 1999}] * 20,
        [{"type": "code", "text": "def f(x):\n    return x  # c\n" * 3000, "language": "python"}] * 10,
    ]
    def send(items: list[Any]) -> httpx.Response:
        with httpx.Client(base_url=server.url, timeout=60) as own:
            return _render(own, viewer, items)

    with concurrent.futures.ThreadPoolExecutor(len(heavy) * 2) as pool:
        answers = list(pool.map(send, heavy * 2))
        health = client.get("/healthz")  # answered meanwhile (the loop is free)
    assert health.status_code == 200
    for items, resp in zip(heavy * 2, answers, strict=True):
        if resp.status_code == 429:
            assert int(resp.headers["retry-after"]) >= 1
            assert_error(resp, 429, "rate_limit_error")
            continue
        assert resp.status_code == 200, resp.text[:300]
        html = resp.json()["html"]
        assert len(html) == len(items) and all(isinstance(h, str) for h in html)
    assert read_stalls(server.stall_report)[before:] == []


def test_a_diff_renders_as_a_table(client: httpx.Client, viewer: str) -> None:
    resp = _render(client, viewer, [{"type": "diff", "old": "a\nb\n", "new": "a\nc\n", "path": "f.py"},
                                    QUADRATIC_DIFF])
    assert resp.status_code == 200, resp.text
    small, big = resp.json()["html"]
    assert 'class="d-del"' in small and 'class="d-add"' in small and "f.py" in small
    assert big == "" or big.startswith('<div class="diff">')


def test_too_large_items_come_back_empty(client: httpx.Client, viewer: str) -> None:
    big = "y" * (render.MAX_ITEM_CHARS + 1)
    resp = _render(client, viewer, [{"type": "markdown", "text": big}, {"type": "markdown", "text": "**b**"}])
    assert resp.status_code == 200, resp.text
    assert resp.json()["html"] == ["", "<p><strong>b</strong></p>\n"]


def test_request_bounds(client: httpx.Client, viewer: str) -> None:
    huge = [{"type": "markdown", "text": "z" * 60_000}] * 20  # > 1 MiB of body
    assert_error(_render(client, viewer, huge), 413, "payload_too_large")
    assert_error(_render(client, viewer, [{"type": "markdown", "text": "x"}] * 301), 400, "invalid_request_error")
