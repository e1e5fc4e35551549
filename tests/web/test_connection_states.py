"""How the web client's session page follows its socket: the reconnect schedule (reconnect.js,
docs/protocol.md §13) as the browser runs it, a tab whose login ends (4003: it says so and stops),
and a mirror session (watch only: no composer, Stop or Allow/Deny) — in Debian's Chromium against a
real `tether server`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.server import ServerProcess
from tests.web.conftest import DESKTOP
from tests.web.helpers import new_session, open_session
from tests.web.rig import Bridge
from tether.protocol.work_secret import decode_work_secret

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

COUNT_SOCKETS = """
window.__sockets = 0;
const Native = window.WebSocket;
window.WebSocket = class extends Native {
  constructor(...args) { super(...args); window.__sockets += 1; }
};
"""


def test_the_reconnect_schedule_as_the_browser_runs_it(page: Any) -> None:
    page.goto("/code")
    got = page.evaluate("""async () => {
      const { ReconnectPolicy } = await import('/static/reconnect.js');
      const run = (codes, rnd) => { const p = new ReconnectPolicy(); return codes.map((c) => p.closed(c, rnd)); };
      const half = () => 0.5;
      const drops = run(Array(10).fill(1006), half).map((d) => d.delayMs);
      const low = run(Array(10).fill(1006), () => 0).map((d) => d.delayMs);
      const high = run(Array(10).fill(1006), () => 0.999999).map((d) => d.delayMs);
      const restart = run([1012, 1006, 1012], half).map((d) => d.delayMs);
      const gone = run([4001, 4001, 4001, 4001, 1006], half);
      const out = run([1006, 4003, 1006], half);
      const reopened = new ReconnectPolicy();
      reopened.closed(1006, half); reopened.closed(1006, half); reopened.opened();
      const stopped = new ReconnectPolicy(); stopped.closed(4003);
      const heard = new ReconnectPolicy();
      heard.closed(4001, half); heard.closed(4001, half); heard.heard();
      return { drops, low, high, restart, gone, out, afterOpen: reopened.closed(1006, half).attempt,
               retryNowStopped: stopped.retryNow(), afterFrame: heard.closed(4001, half).delayMs };
    }""")
    assert got["drops"] == [2000] * 5 + [4000, 8000, 16000, 30000, 30000]
    assert got["low"] == [1600] * 5 + [3200, 6400, 12800, 24000, 24000]  # −20 %
    assert got["high"] == [2400] * 5 + [4800, 9600, 19200, 30000, 30000]  # +20 %, never above 30 s
    assert got["restart"] == [250, 2000, 2000]  # only a streak's first 1012 is quick
    assert [d["retry"] for d in got["gone"]] == [True, True, True, False, False]
    assert [d.get("delayMs") for d in got["gone"][:3]] == [2000, 4000, 6000]
    assert got["gone"][3]["why"] == "gone"
    assert [d["retry"] for d in got["out"]] == [True, False, False] and got["out"][1]["why"] == "unauthorized"
    assert got["afterOpen"] == 1 and got["retryNowStopped"] is False and got["afterFrame"] == 2000


@pytest.fixture
def own_login(browser: Any, web_server: ServerProcess, api: httpx.Client) -> Iterator[Any]:
    """A browser with a login of its own (a one-time link), so that logging it out leaves the
    other tests' login alone."""
    made = api.post("/v1/login-links", json={})
    assert made.status_code == 200, made.text
    ctx = browser.new_context(base_url=web_server.url, viewport=DESKTOP)
    ctx.set_default_timeout(15_000)
    ctx.add_init_script(COUNT_SOCKETS)
    try:
        page = ctx.new_page()
        page.goto(made.json()["url"])
        expect(page).to_have_url(f"{web_server.url}/code")
        yield ctx
    finally:
        ctx.close()


def test_a_tab_whose_login_ends_says_so_and_stops(own_login: Any, api: httpx.Client, bridge: Bridge) -> None:
    """Logging out closes the tab's socket with 4003: the page says "logged out or access revoked"
    with a link to log in again, offers no composer, and opens no socket again — not on its
    schedule, not when the tab comes back or the network returns."""
    sid = new_session(api, bridge.env_id, title="Logged out meanwhile")
    session = own_login.new_page()
    open_session(session, sid)
    expect(session.locator("#composer")).to_be_visible()
    other = own_login.pages[0]
    other.goto("/code")
    other.get_by_role("button", name="Log out").click()
    expect(other).to_have_url(f"{other.url.split('/code')[0].split('/login')[0]}/login")

    expect(session.locator("body")).to_have_attribute("data-socket", "unauthorized")
    expect(session.locator("#health")).to_contain_text("Logged out or access revoked")
    access = session.get_by_role("alert").filter(has_text="Logged out or access revoked.")
    expect(access).to_be_visible()
    expect(access.get_by_role("link", name="Log in again")).to_have_attribute("href", f"/login?next=%2Fcode%2F{sid}")
    expect(session.locator("#composer")).to_be_hidden()
    expect(session.locator("#retry")).to_be_hidden()
    opened = session.evaluate("""() => {
      const before = window.__sockets;
      document.dispatchEvent(new Event('visibilitychange'));
      window.dispatchEvent(new Event('online'));
      return [before, window.__sockets];
    }""")
    assert opened[0] >= 1 and opened[1] == opened[0], opened  # nothing reopened, nothing scheduled
    assert session.evaluate("document.body.dataset.attempt") is None


def _mirror_waiting_for_a_permission(api: httpx.Client) -> str:
    """A mirror session (tag ``ccr-mirror``) whose worker asks a permission question."""
    env = api.post("/v1/environments/bridge", json={
        "machine_name": "mirror-box", "directory": "/home/me/mirrored", "max_sessions": 1,
        "metadata": {"worker_type": "claude_code"}}).json()
    made = api.post("/v1/sessions", json={"environment_id": env["environment_id"], "title": "Mirrored at a terminal",
                                          "tags": ["ccr-mirror"]})
    assert made.status_code == 200, made.text
    sid = str(made.json()["id"])
    secret = {"Authorization": f"Bearer {env['environment_secret']}"}
    item = None
    for _ in range(5):
        item = api.get(f"/v1/environments/{env['environment_id']}/work/poll", headers=secret, timeout=15).json()
        if item:
            break
    assert item, "no work item for the mirror session"
    worker = {"Authorization": f"Bearer {decode_work_secret(item['secret']).session_ingress_token}"}
    assert api.post(f"/v1/environments/{env['environment_id']}/work/{item['id']}/ack", json={},
                    headers=worker).status_code == 200
    asked = api.post(f"/v1/session_ingress/session/{sid}/events", headers=worker, json={"events": [{
        "type": "control_request", "request_id": str(uuid.uuid4()), "uuid": str(uuid.uuid4()),
        "request": {"subtype": "can_use_tool", "tool_name": "Bash", "input": {"command": "ls"},
                    "tool_use_id": "toolu_mirror1"}}]})
    assert asked.status_code == 200, asked.text
    return sid


def test_a_mirror_session_is_watch_only(page: Any, api: httpx.Client) -> None:
    """The server refuses a mirror's prompts, answers and interrupts; the page does not offer them
    (no composer, no Stop, no Allow/Deny) and says why, while the question itself is shown."""
    sid = _mirror_waiting_for_a_permission(api)
    open_session(page, sid)
    card = page.locator("#asks .ask")
    expect(card).to_contain_text("Allow Bash?")
    expect(page.locator("#health")).to_contain_text("Waiting for you")
    expect(page.locator("body")).to_have_attribute("data-mirror", "true")
    note = page.get_by_role("note").filter(has_text="Watch only (mirror).")
    expect(note).to_be_visible()
    expect(note).to_contain_text("given there")
    expect(page.locator("#composer")).to_be_hidden()
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(card.get_by_role("button", name="Allow")).to_be_hidden()
    expect(card.get_by_role("button", name="Deny")).to_be_hidden()
    expect(card).to_contain_text("Watch only (mirror): this is answered at the terminal.")
