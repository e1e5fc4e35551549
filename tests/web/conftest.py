"""Fixtures of the browser tests: a real server, a test bridge behind it, and Debian's
Chromium driven by Playwright (never a downloaded browser)."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import ServerProcess
from tests.support.worker import auth
from tests.web.rig import Bridge

CHROMIUM = os.environ.get("TETHER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}


@pytest.fixture(scope="module")
def web_server(server: ServerProcess) -> ServerProcess:
    """The module's server (tests/conftest.py), under the name these tests read best with."""
    return server


@pytest.fixture(scope="module")
def owner(owner_token: str) -> str:
    return owner_token


@pytest.fixture(scope="module")
def api(web_server: ServerProcess, owner: str) -> Iterator[httpx.Client]:
    """The owner's API client (a personal token, like a script or a bridge)."""
    with httpx.Client(base_url=web_server.url, headers=auth(owner), timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def bridge(web_server: ServerProcess, owner: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    rig = Bridge(web_server.url, owner, tmp_path_factory.mktemp("project")).start()
    try:
        yield rig
    finally:
        rig.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not pathlib.Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (scripts/install-test-deps installs it)")
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def login_state(browser: Any, web_server: ServerProcess, bridge: Bridge) -> dict[str, Any]:
    """Log in once with the one-time link the server printed; later contexts reuse the cookie."""
    from playwright.sync_api import expect

    assert web_server.login_link, "the server printed no login link"
    context = browser.new_context(base_url=web_server.url, viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(web_server.login_link)
        expect(page).to_have_url(f"{web_server.url}/code")
        expect(page.locator(".env .env-name")).to_have_text("test-laptop")
        state: dict[str, Any] = context.storage_state()
    finally:
        context.close()
    return state


@pytest.fixture
def context(browser: Any, web_server: ServerProcess, login_state: dict[str, Any]) -> Iterator[Any]:
    ctx = browser.new_context(base_url=web_server.url, viewport=DESKTOP, storage_state=login_state)
    ctx.set_default_timeout(15_000)
    errors: list[str] = []
    ctx.on("weberror", lambda err: errors.append(str(err.error)))

    def console(message: Any) -> None:
        # the network going away during a server restart is expected; anything else is a bug
        if message.type == "error" and "net::ERR_" not in message.text and "WebSocket" not in message.text:
            errors.append(message.text)

    ctx.on("console", console)
    try:
        yield ctx
    finally:
        ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def page(context: Any) -> Any:
    return context.new_page()
