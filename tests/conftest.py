"""Suite-wide fixtures: the anyio backend and a real server process per module."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.support.server import ServerProcess


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a test module (tests make their own orgs/tokens when they need isolation)."""
    data: pathlib.Path = tmp_path_factory.mktemp("server")
    proc = ServerProcess(data, limits={"rate_per_second": 0}).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def owner_token(server: ServerProcess) -> str:
    return server.token()
