"""/code's "New session on the server": the browser starts a session on a real `tether runner`,
which clones a local bare repository and runs the scripted agent's Bash in it."""

from __future__ import annotations

import pathlib
import re
from typing import Any

import pytest

from tests.support.runner import RunnerProcess, bare_repo, scenario, scripted_agent
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_new_session_on_the_server_runs_in_a_clone(page: Any, web_server: ServerProcess, owner: str,
                                                   tmp_path: pathlib.Path) -> None:
    from playwright.sync_api import expect

    page.goto("/code")
    button = page.get_by_role("button", name="New session on the server")
    expect(button).to_be_hidden()  # no runner registered yet
    repo = bare_repo(tmp_path / "repos", "hello from the web test\n")
    scen = scenario(tmp_path / "scenarios" / "cat.txt", "cat hello.txt")
    with RunnerProcess(web_server.url, owner, tmp_path, tmp_path / "home", "--data-dir", str(tmp_path / "runner"),
                       "--allow-local", str(repo.parent), agent=scripted_agent(scen)) as runner:
        runner.wait_for("registered")
        expect(button).to_be_enabled(timeout=15_000)  # the list refreshes every 4 s
        button.click()
        dialog = page.get_by_role("dialog", name="New session")
        expect(dialog).to_contain_text("On the server")
        dialog.get_by_label("First prompt").fill("show the greeting")
        dialog.get_by_label("Repository").fill(str(repo))
        dialog.get_by_role("button", name="Start session").click()
        page.wait_for_url(re.compile(r"/code/session_[a-z0-9]+$"))
        expect(page.locator("#transcript .msg.assistant").last).to_contain_text(
            "Tool said: hello from the web test", timeout=60_000)
        runner.wait_for("session_started")
