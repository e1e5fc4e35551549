"""PostgreSQL and Redis for the scale-out tests: the loopback services of scripts/services.

The URLs come from ``TETHER_TEST_POSTGRES_URL`` / ``TETHER_TEST_REDIS_URL`` (scripts/test exports
them); without them the services are started here (scripts/services is idempotent), so a single
test file runs on its own too. Never skipped: CI installs and starts them.

- :func:`fresh_database` — a new, empty PostgreSQL database (dropped afterwards) as a
  ``postgresql+asyncpg://`` URL; the ``postgres_url`` fixture gives one per test.
- :class:`RedisProcess` — a Redis of one's own (a test that stops and starts Redis must not take
  the shared one down under the other tests).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.support.server import free_port, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
_ENV = ("TETHER_TEST_POSTGRES_URL", "TETHER_TEST_REDIS_URL")
_started: dict[str, str] = {}


def service_urls() -> dict[str, str]:
    """The admin PostgreSQL URL and the shared Redis URL, starting the services if need be."""
    if all(os.environ.get(name) for name in _ENV):
        return {name: os.environ[name] for name in _ENV}
    if not _started:
        out = subprocess.run([str(ROOT / "scripts" / "services"), "start"], check=True, capture_output=True,
                             text=True, timeout=120).stdout
        _started.update(line.split("=", 1) for line in out.splitlines() if "=" in line)  # type: ignore[misc]
    return dict(_started)


def postgres_admin_url() -> str:
    return service_urls()["TETHER_TEST_POSTGRES_URL"]


def redis_url() -> str:
    return service_urls()["TETHER_TEST_REDIS_URL"]


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", postgres_admin_url(), "-c", sql], check=True,
                   capture_output=True, timeout=60)


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database for the duration; its ``postgresql+asyncpg://`` URL."""
    name, url = _create_database()
    try:
        yield url
    finally:
        _psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_session_databases: list[str] = []


def _create_database() -> tuple[str, str]:
    """A new empty database: its name and ``postgresql+asyncpg://`` URL."""
    name = f"tether_test_{uuid.uuid4().hex[:12]}"
    _psql(f'CREATE DATABASE "{name}"')
    base = postgres_admin_url().rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    return name, f"{base}/{name}"


def session_database() -> str:
    """A new empty database that lives until the test session ends (a ServerProcess's, under
    TETHER_TEST_STORE=postgres: it outlives restarts of that server)."""
    name, url = _create_database()
    _session_databases.append(name)
    return url


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    while _session_databases:
        _psql(f'DROP DATABASE IF EXISTS "{_session_databases.pop()}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database per test (``postgresql+asyncpg://`` URL)."""
    with fresh_database() as url:
        yield url


@pytest.fixture(scope="module")
def module_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database shared by one test module."""
    with fresh_database() as url:
        yield url


@pytest.fixture
def shared_redis_url() -> str:
    """The suite's Redis: tests keep apart by key prefix (a ``uuid`` in it)."""
    return redis_url()


class RedisProcess:
    """A redis-server of this test's own on loopback, to stop and start at will (same port)."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: run scripts/install-test-deps")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir), "--save", "",
             "--appendonly", "no", "--logfile", str(self.workdir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(self._answers, timeout=10, message=f"redis-server on port {self.port} to answer")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_process(tmp_path: pathlib.Path) -> Iterator[RedisProcess]:
    proc = RedisProcess(tmp_path / "redis").start()
    try:
        yield proc
    finally:
        proc.stop()
