"""The web client when the server goes away and comes back, on a phone that is not logged in
yet, and with a permission card holding a long code block — in Debian's Chromium against a real
`tether server` and the test bridge (tests/web/rig.py)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.server import ROOT, ServerProcess
from tests.web.conftest import PHONE
from tests.web.helpers import new_session, open_session, run_axe, send
from tests.web.rig import Bridge, artifacts_dir, axe_source

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def phone(browser: Any, web_server: ServerProcess) -> Iterator[Any]:
    """A phone that has never logged in."""
    ctx = browser.new_context(base_url=web_server.url, viewport=PHONE, is_mobile=True, has_touch=True,
                              device_scale_factor=2)
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        ctx.close()


def test_a_phone_logs_in_with_the_bridge_qr_link(phone: Any, api: httpx.Client, bridge: Bridge,
                                                 web_server: ServerProcess) -> None:
    """What the terminal's QR code carries: a one-time link that logs the phone in and opens the
    machine's page (the new-session sheet of that machine); used once, it says how to get another."""
    made = api.post("/v1/login-links", json={"next": f"/code?bridge={bridge.env_id}"})
    assert made.status_code == 200, made.text
    link = made.json()["url"]
    page = phone.new_page()
    landed: list[str] = []
    page.on("framenavigated", lambda frame: landed.append(frame.url) if frame == page.main_frame else None)
    page.goto(link)
    sheet = page.get_by_role("dialog", name="New session")
    expect(sheet).to_be_visible()
    expect(sheet).to_contain_text("test-laptop")
    page.screenshot(path=str(artifacts_dir() / "phone-login-link.png"))
    # the document the link opened (the page then tidies its URL to ?environment=…)
    assert landed[0] == f"{web_server.url}/code?bridge={bridge.env_id}", landed
    landed.clear()
    page.goto(link)  # the same code scanned again on this phone: already in, straight to the page
    expect(page.get_by_role("dialog", name="New session")).to_be_visible()
    assert landed[0] == f"{web_server.url}/code?bridge={bridge.env_id}", landed

    other = phone.browser.new_context(base_url=web_server.url, viewport=PHONE)
    try:
        used = other.new_page()
        used.goto(link)
        expect(used.get_by_role("alert")).to_contain_text("invalid, used or expired")
        expect(used.get_by_role("alert").locator("code").first).to_have_text("tether admin login-link")
        expect(used.locator('input[name="next"]')).to_have_value(f"/code?bridge={bridge.env_id}")
        # a link may not send the browser to another site, whatever its next says
        token = parse_qs(urlsplit(api.post("/v1/login-links", json={}).json()["path"]).query)["token"][0]
        used.goto(f"/login?token={token}&next=%2F%2Fevil.example%2Fcode")
        expect(used).to_have_url(f"{web_server.url}/code")
    finally:
        other.close()


def test_a_long_code_block_in_a_permission_card_on_a_phone(browser: Any, web_server: ServerProcess,
                                                           login_state: dict[str, Any], api: httpx.Client,
                                                           bridge: Bridge) -> None:
    axe = axe_source(ROOT / "test-artifacts" / ".deps")
    sid = new_session(api, bridge.env_id, "LONGCODE please", title="Long code on a phone")
    ctx = browser.new_context(base_url=web_server.url, viewport=PHONE, storage_state=login_state,
                              is_mobile=True, has_touch=True, device_scale_factor=2)
    ctx.set_default_timeout(15_000)
    try:
        page = ctx.new_page()
        open_session(page, sid)
        card = page.locator(".ask")
        expect(card.get_by_role("heading", name="Allow Bash?")).to_be_visible()
        code = card.locator(".tool-input pre.hl")
        expect(code).to_contain_text("lint-summary-sorted-by-count")  # highlighted by the server
        assert code.evaluate("e => e.scrollWidth > e.clientWidth"), "the code block should scroll sideways here"
        page.screenshot(path=str(artifacts_dir() / "permission-long-code-phone.png"))
        # the scrolling block is a named tab stop, and the arrow keys scroll it
        expect(code).to_have_attribute("tabindex", "0")
        expect(code).to_have_attribute("aria-label", "Code (scrollable)")
        code.focus()
        expect(code).to_be_focused()
        page.keyboard.press("ArrowRight")
        page.wait_for_function("e => e.scrollLeft > 0", arg=code.element_handle())
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        if axe is None:
            pytest.skip("axe-core could not be installed from npm")
        problems = run_axe(page, axe, f"/code/{sid} phone, a permission card with a long code block")
        assert not problems, "\n".join(problems)
    finally:
        ctx.close()


def test_the_server_going_away(context: Any, api: httpx.Client, bridge: Bridge, web_server: ServerProcess) -> None:
    """While the server is away: machines are not "online", the session page does not claim
    "Idle", and a prompt typed meanwhile waits (shown as queued) and goes out exactly once when
    the connection is back."""
    sid = new_session(api, bridge.env_id, title="While the server is away")
    listing, session = context.new_page(), context.new_page()
    listing.goto("/code")
    machine = listing.locator(f'.env[data-env="{bridge.env_id}"]')
    expect(machine.locator(".env-state")).to_have_text("online")
    open_session(session, sid)
    expect(session.locator("#health")).to_contain_text("Worker connected")
    expect(session.locator("#badge")).to_have_text("Idle")
    posts: list[str] = []
    session.on("request", lambda r: posts.append(r.url) if r.method == "POST" and r.url.endswith(
        f"/v1/sessions/{sid}/events") else None)

    web_server.stop()
    try:
        expect(listing.locator("#live")).to_have_text("Offline — retrying")
        expect(machine.locator(".env-state")).to_have_text("status unknown")
        expect(machine.locator(".dot")).to_have_attribute("aria-label", "status unknown")
        expect(machine.get_by_role("button", name="New session")).to_be_disabled()
        expect(listing.locator(f'.session[data-session="{sid}"] .worker')).to_have_text("status unknown")

        expect(session.locator("body")).to_have_attribute("data-socket", "reconnecting")
        expect(session.locator("#health")).to_contain_text(re.compile(r"Offline · reconnecting|Reconnecting…"))
        expect(session.locator("#badge")).to_be_hidden()
        # the retry schedule, honestly shown: the countdown to the next try and a way to try now
        # (a graceful stop says 1012: the first try comes after 250 ms, then every 2 s)
        expect(session.locator("body")).to_have_attribute("data-attempt", re.compile(r"^[3-9]$|^\d\d$"),
                                                          timeout=20_000)
        retry = session.locator("#retry")
        expect(retry).to_be_visible()
        expect(retry).to_contain_text(re.compile(r"Next try in [1-3] s\."))
        expect(session.locator("#health")).to_contain_text("Offline · reconnecting")
        retry.get_by_role("button", name="Retry now").click()  # the schedule starts over
        expect(session.locator("body")).to_have_attribute("data-attempt", "1")
        expect(session.locator(".composer-hint")).to_contain_text("waits here and goes out once the connection")
        send_button = session.locator("#send")
        expect(send_button).to_have_attribute("aria-label", "Queue (sends once reconnected)")
        send(session, "ECHO typed while the server was away")
        mine = session.locator(".msg.user").filter(has_text="ECHO typed while the server was away")
        expect(mine.locator(".delivery")).to_have_text("Queued · sends once connected")
        session.screenshot(path=str(artifacts_dir() / "session-server-away.png"))
        assert posts == []  # kept here, not thrown at a server that is not there
    finally:
        web_server.start()

    expect(session.locator("body")).to_have_attribute("data-socket", "open", timeout=30_000)
    expect(session.locator("#retry")).to_be_hidden()
    expect(mine.locator(".delivery")).to_have_text("Processed", timeout=30_000)
    expect(session.locator("#transcript")).to_contain_text("You said: ECHO typed while the server was away")
    expect(session.locator("#badge")).to_have_text("Idle")
    expect(send_button).to_have_attribute("aria-label", "Send")
    assert len(posts) == 1, posts
    uuid = mine.get_attribute("data-uuid")
    events = api.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()["data"]
    sent = [e for e in events if e["type"] == "user" and "typed while the server was away" in str(e["message"])]
    assert [e["uuid"] for e in sent] == [uuid]

    expect(listing.locator("#live")).to_have_text("Live", timeout=30_000)
    expect(machine.locator(".env-state")).to_have_text("online", timeout=30_000)
    expect(machine.get_by_role("button", name="New session")).to_be_enabled()
    assert re.fullmatch(r"[0-9a-f-]{36}", uuid or "")
