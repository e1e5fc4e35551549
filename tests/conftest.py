"""Suite-wide fixtures: the anyio backend and a real server process per module."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator

import pytest

from tests.support.server import STALL_LIMIT_S, STALL_REPORTS, ServerProcess, read_stalls

# postgres_url / module_postgres_url / shared_redis_url / redis_process (PostgreSQL and Redis on loopback)
pytest_plugins = ["tests.support.services"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def no_loop_stalls() -> Iterator[None]:
    """Fail a test during which a server it talks to blocked its event loop for more than
    STALL_LIMIT_S (the servers measure it themselves: tests/support/server.py)."""
    offsets = {report: report.stat().st_size if report.exists() else 0 for report in STALL_REPORTS}
    yield
    found = []
    for report in sorted(STALL_REPORTS):
        found += [(report.parent, stall) for stall in read_stalls(report, offsets.get(report, 0))]
    if found:
        lines = [f"{where.name}: blocked {s['stall_ms']} ms ({s['late_ms']} ms late, {s['runnable_ms']} ms "
                 f"waiting for a CPU); the loop was in:\n{s['stack'] or '(no sample)'}" for where, s in found]
        pytest.fail(f"a server's event loop was blocked longer than {STALL_LIMIT_S * 1000:.0f} ms:\n"
                    + "\n".join(lines), pytrace=False)


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
