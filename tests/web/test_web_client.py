"""The web client in a real browser (Debian's Chromium, headless) against a real `tether
server`, with a bridge running `tether agent --backend scripted` behind it."""

from __future__ import annotations

import re
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.server import ROOT, ServerProcess, wait_until
from tests.support.worker import auth
from tests.web.conftest import DESKTOP, PHONE
from tests.web.helpers import new_session, open_session, post, run_axe, send, user_message
from tests.web.rig import Bridge, artifacts_dir, axe_source
from tether.protocol.work_secret import decode_work_secret

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def test_session_list_is_live(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    page.goto("/code")
    env = page.locator(f'.env[data-env="{bridge.env_id}"]')
    expect(env.locator(".dot.on")).to_be_visible()
    expect(env).to_contain_text("main")
    sid = new_session(api, bridge.env_id, title="Live status check")
    row = page.locator(f'.session[data-session="{sid}"]')
    expect(row).to_contain_text("Live status check")
    expect(row.locator(".worker")).to_have_text("worker connected")
    expect(row.locator(".badge")).to_have_text("Idle")
    # a tool that needs permission: the badge moves without a reload, and back after a stop
    post(api, sid, user_message("PERMIT from the list test"))
    expect(row.locator(".badge")).to_have_text("Requires action")
    post(api, sid, {"type": "control_request", "request_id": str(uuid.uuid4()), "request": {"subtype": "interrupt"}})
    expect(row.locator(".badge")).to_have_text("Idle")
    # filters
    page.get_by_label("Status").select_option("requires_action")
    expect(row).to_have_count(0)
    page.get_by_label("Status").select_option("idle")
    expect(row).to_be_visible()
    page.get_by_label("Worker").select_option("claude_code")
    expect(row).to_be_visible()
    assert "worker_type=claude_code" in page.url and "status=idle" in page.url
    page.get_by_label("Machine", exact=True).select_option(bridge.env_id)
    expect(row).to_be_visible()
    # archived sessions leave the default (active) view
    assert api.post(f"/v1/sessions/{sid}/archive", json={}).status_code == 200
    page.get_by_label("Status").select_option("active")
    expect(row).to_have_count(0)
    page.get_by_label("Status").select_option("archived")
    expect(row.locator(".badge")).to_have_text("Archived")


def test_new_session_streams_a_markdown_answer(page: Any, bridge: Bridge) -> None:
    page.goto(f"/code?bridge={bridge.env_id}")
    dialog = page.get_by_role("dialog", name="New session")
    expect(dialog).to_be_visible()
    dialog.get_by_label("First prompt").fill("SLOWTEXT please")
    dialog.get_by_role("button", name="Start session").click()
    page.wait_for_url(re.compile(r"/code/session_[a-z0-9]+$"))
    streaming = page.locator("#streaming .streaming")
    expect(streaming).to_contain_text("Line one")  # partial text, before the final message
    final = page.locator("#transcript .msg.assistant")
    expect(final).to_contain_text("FINAL-MARKER")
    expect(streaming).to_have_count(0)
    expect(page.locator("#transcript .msg.user .delivery")).to_have_text("Processed")

    # each prompt goes sending → queued → delivered → processed
    page.evaluate("""() => {
      window.__states = [];
      new MutationObserver((muts) => muts.forEach((m) => {
        const t = m.target.nodeType === 1 ? m.target : m.target.parentElement;
        const d = t && t.closest && t.closest('.delivery');
        if (d && d.closest('.msg.user').dataset.uuid === window.__watch) window.__states.push(d.dataset.state);
      })).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['data-state']});
      new MutationObserver((muts) => muts.forEach((m) => m.addedNodes.forEach((n) => {
        if (n.classList && n.classList.contains('user') && !window.__watch) {
          window.__watch = n.dataset.uuid; window.__states.push(n.querySelector('.delivery').dataset.state);
        }
      }))).observe(document.getElementById('outbox'), {childList: true});
    }""")
    box = page.get_by_role("textbox", name="Prompt", exact=True)
    box.click()
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")
    box.press("Enter")
    mine = page.locator("#transcript .msg.user").filter(has_text="second line")
    expect(mine.locator(".prompt-text")).to_have_text("first line\nsecond line")
    expect(mine.locator(".delivery")).to_have_text("Processed")
    states = page.evaluate("window.__states")
    assert states[0] == "sending" and states[-1] == "processed" and "delivered" in states, states
    ranks = {"sending": 0, "queued": 1, "delivered": 2, "processed": 3}
    assert [ranks[s] for s in states] == sorted(ranks[s] for s in states), states

    answer = page.locator("#transcript .msg.assistant").filter(has_text="STREAMED-ANSWER-END")
    expect(answer.locator("strong")).to_have_text("bold")
    expect(answer.locator("li")).to_have_count(2)
    expect(answer.locator("pre.hl .k").first).to_have_text("def")  # highlighted by Pygments
    expect(page.locator("#transcript .meta.result")).to_have_count(2)


def test_permission_cards_allow_deny_and_vanish_everywhere(context: Any, api: httpx.Client, bridge: Bridge) -> None:
    note = bridge.workdir / "note.txt"
    note.unlink(missing_ok=True)
    sid = new_session(api, bridge.env_id, title="Permissions")
    a, b = context.new_page(), context.new_page()
    open_session(a, sid)
    open_session(b, sid)
    send(a, "PERMIT one")
    for p in (a, b):
        card = p.locator(".ask")
        expect(card).to_have_count(1)
        expect(card.get_by_role("heading", name="Allow Write?")).to_be_visible()
        expect(card.locator(".d-add")).to_contain_text("hello from the browser test")
        expect(p.locator("#health")).to_contain_text("Waiting for you")
    a.locator(".ask").get_by_role("button", name="Allow").click()
    for p in (a, b):
        expect(p.locator(".ask")).to_have_count(0)
    expect(b.locator("#transcript")).to_contain_text("The tool answered: File created")
    expect(b.locator('.tool[data-name="Write"] .tool-state')).to_have_text("done")
    assert note.read_text() == "hello from the browser test\n"
    note.unlink()

    send(b, "PERMIT two")
    for p in (a, b):
        expect(p.locator(".ask")).to_have_count(1)
    c = context.new_page()  # a client that connects later gets the pending request first
    open_session(c, sid)
    expect(c.locator(".ask")).to_have_count(1)
    card = b.locator(".ask")
    card.get_by_label(re.compile("Message for the agent")).fill("not today")
    card.get_by_role("button", name="Deny").click()
    for p in (a, b, c):
        expect(p.locator(".ask")).to_have_count(0)
    expect(a.locator("#transcript")).to_contain_text("The tool answered: not today")
    expect(a.locator('.tool[data-name="Write"] .tool-state').last).to_have_text("denied")
    assert not note.exists()
    perms = api.get(f"/v1/sessions/{sid}/permissions").json()["data"]
    assert [p["status"] for p in perms] == ["allowed", "denied"]


def test_stop_interrupts_a_long_tool(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    sid = new_session(api, bridge.env_id, "LONGRUN first", title="Stop")
    open_session(page, sid)
    # Stop while the agent waits for permission: the request is cancelled and its card goes
    expect(page.locator(".ask")).to_have_count(1)
    page.get_by_role("button", name="Stop").click()
    expect(page.locator(".ask")).to_have_count(0)
    expect(page.locator('.tool[data-name="Bash"] .tool-state')).to_have_text("cancelled")
    expect(page.locator("#badge")).to_have_text("Idle")
    assert [p["status"] for p in api.get(f"/v1/sessions/{sid}/permissions").json()["data"]] == ["cancelled"]
    # Stop while the tool runs
    send(page, "LONGRUN now")
    page.locator(".ask").get_by_role("button", name="Allow").click()
    tool = page.locator('.tool[data-name="Bash"]').last
    expect(tool.locator(".tool-sum")).to_have_text("sleep 60")
    expect(tool.locator(".tool-state")).to_have_text("allowed")
    expect(page.locator("#health")).to_contain_text("Working")
    page.get_by_role("button", name="Stop").click()
    expect(page.locator("#transcript .meta").filter(has_text="Stop requested")).to_have_count(2)
    expect(page.locator("#badge")).to_have_text("Idle", timeout=20_000)
    expect(page.get_by_role("button", name="Stop")).to_be_hidden()
    expect(tool.locator(".tool-state")).to_have_text("stopped")
    expect(page.locator("#health")).to_contain_text("Worker connected")


def test_server_restart_mid_stream_shows_everything_once(context: Any, api: httpx.Client, bridge: Bridge,
                                                         web_server: ServerProcess) -> None:
    sid = new_session(api, bridge.env_id, title="Restart")
    page, away = context.new_page(), context.new_page()
    open_session(page, sid)
    open_session(away, sid)
    expect(page.locator("#health")).to_contain_text("Worker connected")
    send(page, "SLOWTEXT across a restart")
    expect(page.locator("#streaming .streaming")).to_contain_text("Line one")
    # the second tab is frozen like a backgrounded phone tab, and thawed after everything happened
    cdp = context.new_cdp_session(away)
    cdp.send("Page.setWebLifecycleState", {"state": "frozen"})
    web_server.restart()
    final = page.locator("#transcript .msg.assistant").filter(has_text="FINAL-MARKER")
    expect(final).to_have_count(1, timeout=30_000)
    expect(page.locator("#transcript .meta.result")).to_have_count(1)
    expect(page.locator("#streaming .streaming")).to_have_count(0)
    assert int(page.locator("body").get_attribute("data-connects") or 0) >= 2
    cdp.send("Page.setWebLifecycleState", {"state": "active"})
    away.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(away.locator("#transcript .msg.assistant").filter(has_text="FINAL-MARKER")).to_have_count(1)

    events = api.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()["data"]
    expected = {f"{e['uuid']}:" for e in events if e["type"] in ("user", "result")}
    expected |= {f"{e['uuid']}:{i}" for e in events if e["type"] == "assistant"
                 for i, block in enumerate(e["message"]["content"]) if block["type"] == "text"}
    for p in (page, away):
        expect(p.locator("#transcript .meta.result")).to_have_count(1)
        shown = p.eval_on_selector_all(
            "#transcript [data-uuid]", "els => els.map(e => e.dataset.uuid + ':' + (e.dataset.block || ''))")
        counts = Counter(shown)
        assert all(n == 1 for n in counts.values()), counts
        assert expected <= set(counts), expected - set(counts)
        assert p.locator("#transcript .msg.user").filter(has_text="SLOWTEXT across a restart").count() == 1
        text = p.locator("#transcript .msg.assistant").filter(has_text="Line one").inner_text()
        assert text.count("Line one") == 1 and text.strip().endswith("FINAL-MARKER.")
    # the page keeps working after the restart
    send(page, "ECHO after the restart")
    expect(page.locator("#transcript")).to_contain_text("You said: ECHO after the restart")


def test_agent_and_user_text_is_never_markup(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    evil = 'ECHO <img src=x onerror="document.body.dataset.pwned=1"> <script>document.body.dataset.pwned=2</script> [x](javascript:alert(1))'
    sid = new_session(api, bridge.env_id, evil)
    open_session(page, sid)
    expect(page.locator("#transcript .msg.assistant")).to_contain_text("You said: ECHO <img src=x")
    expect(page.locator("#transcript .msg.user .prompt-text")).to_have_text(evil)
    assert page.locator("#transcript img, #transcript script").count() == 0
    assert page.locator("#transcript a[href^='javascript']").count() == 0
    assert page.evaluate("document.body.dataset.pwned") is None


def _claude_worker_session(api: httpx.Client, title: str) -> tuple[str, dict[str, str]]:
    """A session whose worker this test plays (as the stock CLI would write): its id and the worker's headers."""
    env = api.post("/v1/environments/bridge", json={
        "machine_name": "claude-box", "directory": "/home/me/project", "max_sessions": 1,
        "metadata": {"worker_type": "claude_code"}}).json()
    made = api.post("/v1/sessions", json={"environment_id": env["environment_id"], "title": title})
    assert made.status_code == 200, made.text
    secret = {"Authorization": f"Bearer {env['environment_secret']}"}
    item = None
    for _ in range(5):
        item = api.get(f"/v1/environments/{env['environment_id']}/work/poll", headers=secret, timeout=15).json()
        if item:
            break
    assert item, "no work item"
    worker = {"Authorization": f"Bearer {decode_work_secret(item['secret']).session_ingress_token}"}
    assert api.post(f"/v1/environments/{env['environment_id']}/work/{item['id']}/ack", json={},
                    headers=worker).status_code == 200
    return str(made.json()["id"]), worker


def test_a_stopped_claude_turn_says_interrupted_not_its_diagnostic(page: Any, api: httpx.Client) -> None:
    """The stock CLI's result for a stopped turn carries an internal "[ede_diagnostic] …" line in
    ``errors`` (tests/fixtures/claude-cli/interrupt_while_tool_runs.jsonl): the page says the turn
    was interrupted and never shows the diagnostic; a real error's words are still shown."""
    sid, worker = _claude_worker_session(api, "Stopped by the user")
    result = {"type": "result", "subtype": "error_during_execution", "is_error": True, "duration_ms": 2592,
              "num_turns": 2, "result": None, "terminal_reason": "aborted_tools", "session_id": "",
              "errors": ["[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=tool_use"]}
    failed = {**result, "terminal_reason": "api_error", "errors": ["API Error: 529 Overloaded"]}
    posted = api.post(f"/v1/session_ingress/session/{sid}/events", headers=worker, json={"events": [
        {**result, "uuid": str(uuid.uuid4())}, {**failed, "uuid": str(uuid.uuid4())}]})
    assert posted.status_code == 200, posted.text
    open_session(page, sid)
    ends = page.locator("#transcript .meta.result")
    expect(ends).to_have_text(["Stopped: Interrupted", "Stopped: API Error: 529 Overloaded"])
    expect(page.locator("#transcript")).not_to_contain_text("ede_diagnostic")


def test_a_bash_permission_card_shows_its_description_once(page: Any, api: httpx.Client) -> None:
    """The stock CLI sends a Bash request's description both as the request's and in the input:
    the card shows it once, above the command."""
    sid, worker = _claude_worker_session(api, "Bash with a description")
    what = "Create a file and print hi"
    asked = api.post(f"/v1/session_ingress/session/{sid}/events", headers=worker, json={"events": [{
        "type": "control_request", "request_id": str(uuid.uuid4()), "uuid": str(uuid.uuid4()),
        "request": {"subtype": "can_use_tool", "tool_name": "Bash", "description": what,
                    "input": {"command": "touch a.txt && echo hi", "description": what},
                    "tool_use_id": "toolu_desc1"}}]})
    assert asked.status_code == 200, asked.text
    open_session(page, sid)
    card = page.locator("#asks .ask")
    expect(card.locator(".ask-desc")).to_have_text(what)
    expect(card.locator(".tool-input")).to_contain_text("touch a.txt && echo hi")
    expect(card.locator(".tool-input")).not_to_contain_text(what)


def test_history_pages_load_on_demand(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    sid = new_session(api, bridge.env_id, title="History")
    for i in range(3):
        post(api, sid, user_message(f"ECHO number {i}"))

    def results() -> int:
        events = api.get(f"/v1/sessions/{sid}/events", params={"limit": 1000}).json()["data"]
        return sum(1 for e in events if e["type"] == "result")

    wait_until(lambda: results() == 3, 20, message="three answers")
    open_session(page, f"{sid}?page_size=4")  # the socket opens once the newest page is shown
    earlier = page.get_by_role("button", name="Show earlier messages")
    expect(earlier).to_be_visible()
    for _ in range(10):
        if not earlier.is_visible():
            break
        earlier.click()
        page.wait_for_function("() => !document.getElementById('load-earlier').disabled")
    expect(earlier).to_be_hidden()
    prompts = page.locator("#transcript .msg.user .prompt-text").all_inner_texts()
    assert prompts == [f"ECHO number {i}" for i in range(3)]
    answers = page.locator("#transcript .msg.assistant").all_inner_texts()
    assert answers == [f"You said: ECHO number {i}" for i in range(3)]
    expect(page.locator("#transcript .meta.result")).to_have_count(3)


def test_rename_and_archive(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    sid = new_session(api, bridge.env_id, title="Before")
    open_session(page, sid)
    page.get_by_label("Session actions").first.click()
    page.get_by_role("button", name="Rename").click()
    page.get_by_role("dialog", name="Rename session").get_by_label("Title").fill("After the rename")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#title")).to_have_text("After the rename")
    assert api.get(f"/v1/sessions/{sid}").json()["title"] == "After the rename"
    page.get_by_label("Session actions").first.click()
    page.get_by_role("button", name="Archive").first.click()
    page.get_by_role("dialog", name="Archive this session?").get_by_role("button", name="Archive").click()
    expect(page.locator("#health")).to_contain_text("Archived")
    expect(page.locator("#composer")).to_be_hidden()
    expect(page.locator("#ended")).to_have_text("This session has ended. It was archived by a person.")
    archived = api.get(f"/v1/sessions/{sid}").json()
    assert archived["session_status"] == "archived" and archived["archive_reason"] == "user"


def test_an_archived_session_says_why_and_links_its_successor(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    """Issue #10 item 3: a restarted bridge archives the old session as replaced and creates a new
    one in the same directory; the old page says why it ended and leads to the new one."""
    old = new_session(api, bridge.env_id, title="Before the restart")
    assert api.post(f"/v1/sessions/{old}/archive", json={"reason": "replaced"}).status_code == 200
    nxt = new_session(api, bridge.env_id, title="After the restart")
    open_session(page, old)
    ended = page.get_by_role("note")
    expect(ended).to_contain_text("This session has ended. A new bridge in the same directory started a fresh session.")
    link = ended.get_by_role("link", name="Continue in the next session →")
    expect(link).to_have_attribute("href", f"/code/{nxt}")
    link.click()
    expect(page).to_have_url(re.compile(rf"/code/{nxt}$"))
    expect(page.locator("#title")).to_have_text("After the restart")
    expect(page.locator("#ended")).to_be_hidden()


def test_attachments_travel_with_the_prompt(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    sid = new_session(api, bridge.env_id, title="Attachments")
    open_session(page, sid)
    page.get_by_label("Attach files").set_input_files(
        files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"attached text"}])
    expect(page.locator(".att .att-state")).to_have_text("1 KB")
    send(page, "ECHO with a file")
    prompt = page.locator("#transcript .msg.user").filter(has_text="ECHO with a file")
    link = prompt.get_by_role("link", name=re.compile("notes.txt"))
    expect(link).to_be_visible()
    events = api.get(f"/v1/sessions/{sid}/events").json()["data"]
    sent = next(e for e in events if e["type"] == "user" and e["message"]["content"] == "ECHO with a file")
    file_uuid = sent["file_attachments"][0]["file_uuid"]
    assert sent["file_attachments"][0]["file_name"] == "notes.txt"
    assert api.get(f"/api/oauth/files/{file_uuid}/content").content == b"attached text"
    # the agent read the file: the scripted model echoes everything the prompt carried
    answer = page.locator("#transcript .msg.assistant").filter(has_text="You said:")
    expect(answer).to_contain_text("ECHO with a file")
    expect(answer).to_contain_text("Result of calling the Read tool: 1 attached text")


def test_an_attachment_the_agent_cannot_get_shows_a_warning(page: Any, api: httpx.Client, bridge: Bridge) -> None:
    sid = new_session(api, bridge.env_id, title="Missing attachment")
    open_session(page, sid)
    post(api, sid, {**user_message("ECHO without its file"), "file_attachments": [
        {"file_uuid": "00000000-0000-4000-8000-000000000000", "file_name": "vanished.txt"}]})
    expect(page.locator("#transcript .meta.warn")).to_contain_text(
        "The attachment vanished.txt did not reach the agent: the server answered 404")
    expect(page.locator("#transcript .msg.assistant")).to_contain_text("You said: ECHO without its file")


def test_settings_tokens_policy_and_members(page: Any, api: httpx.Client, web_server: ServerProcess) -> None:
    page.goto("/settings")
    page.get_by_label("Name").fill("browser-made")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_label(re.compile("Token “browser-made”")).input_value()
    token_row = page.locator(".token").filter(has_text="browser-made")
    expect(token_row).to_be_visible()
    expect(token_row).to_contain_text("last used never")
    me = httpx.get(f"{web_server.url}/v1/me", headers=auth(secret))
    assert me.status_code == 200 and me.json()["credential"] == "personal"
    page.reload()
    expect(token_row).not_to_contain_text("last used never")  # the use above was recorded
    token_row.get_by_role("button", name="Revoke browser-made").click()
    expect(token_row).to_have_count(0)
    assert httpx.get(f"{web_server.url}/v1/me", headers=auth(secret)).status_code == 401

    switch = page.get_by_label("Allow Remote Control")
    expect(switch).to_be_checked()
    switch.uncheck()
    expect(page.locator(".toast").filter(has_text="is off")).to_have_count(1)
    assert api.post("/v1/sessions", json={}).json()["error"]["type"] == "policy_denied"
    assert api.get("/v1/me").json()["policy"]["allow_remote_control"] is False
    switch.check()
    expect(page.locator(".toast").filter(has_text="is allowed")).to_have_count(1)
    assert api.get("/v1/me").json()["policy"]["allow_remote_control"] is True

    expect(page.locator(".member").filter(has_text="owner@localhost")).to_contain_text("(you)")
    page.locator("#member-email").fill("teammate@example.com")
    page.locator("#member-role").select_option("viewer")
    page.get_by_role("button", name="Add member").click()
    link = page.get_by_label(re.compile("One-time login link")).input_value()
    assert "/login?token=tll_" in link
    role = page.get_by_label("Role of teammate@example.com")
    expect(role).to_have_value("viewer")
    role.select_option("member")
    expect(page.locator(".toast").filter(has_text="is now member")).to_have_count(1)


def test_screenshots_and_accessibility(browser: Any, web_server: ServerProcess, login_state: dict[str, Any],
                                       api: httpx.Client, bridge: Bridge) -> None:
    sid = new_session(api, bridge.env_id, "Show me what you can do", title="Tour of the web client")
    # the first answer, then a permission request left open for the pictures
    axe = axe_source(ROOT / "test-artifacts" / ".deps")
    out = artifacts_dir()
    problems: list[str] = []
    for name, viewport, scheme in (("phone", PHONE, "light"), ("desktop", DESKTOP, "light"),
                                   ("phone-dark", PHONE, "dark"), ("desktop-dark", DESKTOP, "dark")):
        ctx = browser.new_context(base_url=web_server.url, viewport=viewport, storage_state=login_state,
                                  color_scheme=scheme, is_mobile=viewport is PHONE, has_touch=viewport is PHONE,
                                  device_scale_factor=2 if viewport is PHONE else 1)
        ctx.set_default_timeout(15_000)
        try:
            page = ctx.new_page()
            open_session(page, sid)
            expect(page.locator("#transcript .msg.assistant").first).to_contain_text("STREAMED-ANSWER-END")
            if not page.locator(".ask").count() and name == "phone":
                send(page, "PERMIT for the screenshot")
            expect(page.locator(".ask")).to_have_count(1)
            # its turn waits on the open permission: started, not done (processed comes with its result)
            expect(page.locator("#transcript .msg.user .delivery").last).to_have_text("Delivered")
            if viewport is DESKTOP:
                page.locator(".tool summary").first.click()
                expect(page.locator(".tool .diff").first).to_be_visible()
            page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
            page.screenshot(path=str(out / f"session-{name}.png"))
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            problems += run_axe(page, axe, f"/code/<id> {name}")
            page.goto("/code")
            expect(page.locator(f'.session[data-session="{sid}"] .badge')).to_have_text("Requires action")
            page.screenshot(path=str(out / f"code-{name}.png"), full_page=True)
            assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            problems += run_axe(page, axe, f"/code {name}")
            if name in ("phone", "desktop"):
                page.goto("/settings")
                expect(page.locator(".member").first).to_be_visible()
                page.screenshot(path=str(out / f"settings-{name}.png"), full_page=True)
                assert page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
                problems += run_axe(page, axe, f"/settings {name}")
        finally:
            ctx.close()
    if axe is None:
        pytest.skip("axe-core could not be installed from npm; screenshots were saved")
    assert not problems, "\n".join(problems)
