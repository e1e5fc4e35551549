"""The session page of a `tether claude` session (the stock `claude` TUI in tmux, shared with the
module's server: the v1 core): it says the session is at the terminal; "Take over" ends the TUI and
the page drives it; "Return to terminal" brings the TUI back; the bar goes when the session ends."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.support.claude_home import seed_claude_home, tether_claude_argv, tether_claude_env
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.server import ServerProcess
from tests.support.tmux_pane import PaneTerminal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
TUI_READY = r"\? for shortcuts"


@pytest.fixture
def desk(web_server: ServerProcess, owner: str, tmp_path: pathlib.Path) -> Iterator[PaneTerminal]:
    with FakeAnthropic() as fake:
        project, home = tmp_path / "project", tmp_path / "home"
        project.mkdir()
        seed_claude_home(home, project)
        env = tether_claude_env(home=home, tether_home=tmp_path / "tether-home", server_url=web_server.url,
                                token=owner, anthropic_url=fake.url)
        term = PaneTerminal(tether_claude_argv(log_file=tmp_path / "tether-claude.log"), project, env, tmp_path,
                            140, 50)
        try:
            yield term
        finally:
            term.close()


def test_take_over_and_return_to_terminal(page: Any, desk: PaneTerminal) -> None:
    sid = desk.wait_for(r"Remote Control active · \S+/code/(session_[0-9a-z]+)", 60).group(1)
    desk.wait_for(TUI_READY, 60)
    page.goto(f"/code/{sid}")
    expect(page.locator("body")).to_have_attribute("data-socket", "open")
    bar = page.locator("#terminal")
    take_over = page.get_by_role("button", name="Take over")
    back = page.get_by_role("button", name="Return to terminal")
    expect(bar).to_contain_text("At the terminal · a prompt from here takes it over")
    expect(page.locator("#health")).to_contain_text("At the terminal")
    expect(back).to_be_hidden()

    take_over.click()
    desk.wait_for(r"continues on another device", 60)
    expect(bar).to_contain_text("Remote · press any key at the terminal to take it back", timeout=30_000)
    expect(take_over).to_be_hidden()

    back.click()
    expect(bar).to_contain_text("At the terminal", timeout=60_000)
    desk.wait_for(r"returning to the terminal \(asked on another device\)", 10)
    desk.wait_for(r"back at the terminal[\s\S]*\? for shortcuts", 60)
    expect(take_over).to_be_visible()

    desk.type("/exit")
    assert desk.wait_exit(60) == 0
    expect(bar).to_be_hidden(timeout=30_000)
