"""`tether attach` as a person uses it: a real `tether server`, a real bridge (`tether rc --json` with
`tether agent --backend scripted`) and `tether attach` in a tmux terminal (send-keys / capture-pane).

A typed prompt is answered and streamed; a permission answered in attach reaches every other
subscriber (the web client's card goes away), and one answered elsewhere disappears from attach;
Esc interrupts, while `--viewer` can neither type nor interrupt; after a server restart attach
resumes with nothing lost or repeated; a revoked login (close 4003) ends attach with a clear message."""

from __future__ import annotations

import pathlib
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from tests.e2e.attach_helpers import Stack, attach, scripted_agent
from tests.e2e.bridge_helpers import Api, answer, fresh, in_thread, is_permission, open_api
from tests.support.bridge import BridgeProcess
from tests.support.server import ServerProcess
from tests.support.tmux import TmuxTerminal, squash
from tests.support.worker import auth

pytestmark = [pytest.mark.anyio, pytest.mark.e2e, pytest.mark.timeout(150)]


def start_stack(server: ServerProcess, token: str, root: pathlib.Path) -> Stack:
    project, home, bridge_home = root / "project", root / "home", root / "bridge-home"
    for d in (project, home, bridge_home):
        d.mkdir(parents=True, exist_ok=True)
    bridge = BridgeProcess(server.url, token, project, bridge_home, "--no-create-session-in-dir",
                           agent=scripted_agent(root)).start()
    bridge.wait_for("registered")
    return Stack(server, bridge, token, project, home)


@pytest.fixture(scope="module")
def stack(server: ServerProcess, owner_token: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = start_stack(server, owner_token, tmp_path_factory.mktemp("attach"))
    try:
        yield s
    finally:
        assert s.bridge.stop() == 0


async def new_session(api: Api, stack: Stack, title: str) -> str:
    sid = await api.create_session(stack.bridge.environment_id, title=title)
    await in_thread(stack.bridge.wait_for, "session_started", lambda e: e["session_id"].endswith(sid[-26:]))
    return sid


@pytest.fixture
async def session(stack: Stack) -> AsyncIterator[tuple[Api, str]]:
    async with open_api(stack.server, stack.token) as client:
        api = Api(stack.server, stack.token, client)
        sid = await new_session(api, stack, f"attach {uuid.uuid4().hex[:8]}")
        yield api, sid
        await api.archive(sid)


async def events_of(api: Api, sid: str) -> list[dict[str, object]]:
    r = await api.client.get(f"/v1/sessions/{sid}/events?limit=1000", headers=auth(api.token))
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


async def test_a_typed_prompt_is_answered_and_streamed(session: tuple[Api, str], stack: Stack) -> None:
    api, sid = session
    with attach(stack.server, stack.token, stack.home, sid) as term:
        term.wait_for("Connected; live.")
        term.line("STREAMLONG please")
        # while the answer is written, its tail shows live in the status bar …
        term.wait_for(lambda s: "● Streaming a" in s, everything=False)
        # … and once complete it is printed as Markdown (the ** markers are gone)
        final = term.wait_for("Streaming a long answer, so that its live preview")
        assert "**long**" not in final
        term.wait_for(lambda s: " · idle · live" in s, everything=False)
    prompts = [e for e in await events_of(api, sid) if e["type"] == "user" and "STREAMLONG" in str(e)]
    assert len(prompts) == 1


async def test_a_permission_answered_in_attach_reaches_every_subscriber(session: tuple[Api, str],
                                                                         stack: Stack) -> None:
    api, sid = session
    web = await api.subscribe(sid)  # what the web client's session page holds
    with attach(stack.server, stack.token, stack.home, sid) as term:
        term.wait_for("Connected; live.")
        term.line("please write the note")
        term.wait_for("Permission: allow Write?")
        request = await web.wait_for(is_permission, timeout=30)
        term.line("y")
        rid = request["request_id"]
        resolution = await web.wait_for(lambda f: f.get("type") == "control_response"
                                        and isinstance(f.get("sequence_num"), int)
                                        and f["response"]["request_id"] == rid, timeout=30)
        assert resolution["response"]["response"]["behavior"] == "allow"
        term.wait_for("✓ Allowed Write")
        term.wait_for("All done with the note.")
    assert (stack.project / "tether-note.txt").read_text() == "Hello from attach.\n"
    (stack.project / "tether-note.txt").unlink()
    await web.close()


async def test_a_question_answered_elsewhere_disappears_from_attach(session: tuple[Api, str],
                                                                    stack: Stack) -> None:
    api, sid = session
    web = await api.subscribe(sid)
    with attach(stack.server, stack.token, stack.home, sid) as term:
        term.wait_for("Connected; live.")
        old = fresh(web)
        await api.prompt(sid, "write it from the phone")
        term.wait_for(lambda s: "permission: allow Write?" in s, everything=False)
        request = await web.wait_for(lambda f: is_permission(f) and id(f) not in old, timeout=30)
        await answer(web, request, "deny", message="not today")
        term.wait_for("✗ Denied Write — not today")
        screen = term.wait_for(lambda s: "permission:" not in s and "allow? [y/n]" not in s, everything=False)
        assert "❯" in screen
        term.line("y")  # no question open any more: a plain prompt, not an answer
        term.wait_for("❯ y")
    (stack.project / "tether-note.txt").unlink(missing_ok=True)
    await web.close()


async def test_esc_interrupts_but_a_viewer_can_neither_type_nor_interrupt(session: tuple[Api, str],
                                                                          stack: Stack) -> None:
    api, sid = session
    with attach(stack.server, stack.token, stack.home, "--viewer", sid) as viewer, \
            attach(stack.server, stack.token, stack.home, sid) as driver:
        viewer.wait_for("Connected; live.")
        driver.wait_for("Connected; live.")
        driver.line("WAITLONG please")
        viewer.wait_for("Working on it.")
        viewer.wait_for(lambda s: " · running · live" in s, everything=False)
        viewer.line("a prompt from the viewer")
        viewer.wait_for("Watching only (--viewer): nothing is sent from here.")
        viewer.press("Escape")
        viewer.line("/help")  # a marker: everything typed before it was handled
        viewer.wait_for("Type a prompt and press Enter")
        log = await events_of(api, sid)
        assert not [e for e in log if e["type"] == "control_request"
                    and (e.get("request") or {}).get("subtype") == "interrupt"]  # type: ignore[union-attr]
        assert not [e for e in log if "a prompt from the viewer" in str(e)]

        driver.press("Escape")
        driver.wait_for("Stop requested.")
        viewer.wait_for("Stop requested")  # the interrupt shows in every client's transcript
        driver.wait_for(lambda s: " · idle · live" in s, everything=False, timeout=30)
        assert "Finished waiting." not in driver.scrollback()

        viewer.press("C-c")  # a viewer's Ctrl-C detaches, never interrupts
        assert viewer.wait_exit() == 0
        assert "Detached." in viewer.scrollback()


@pytest.fixture
def own_stack(tmp_path: pathlib.Path) -> Iterator[Stack]:
    server = ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}).start()
    s = start_stack(server, server.token(), tmp_path)
    try:
        yield s
    finally:
        s.bridge.stop()
        server.stop()


async def test_attach_resumes_without_gaps_after_a_server_restart(own_stack: Stack) -> None:
    stack = own_stack
    async with open_api(stack.server, stack.token) as client:
        api = Api(stack.server, stack.token, client)
        sid = await new_session(api, stack, "restart")
        with attach(stack.server, stack.token, stack.home, sid) as term:
            term.wait_for("Connected; live.")
            term.line("HELLO one")
            term.wait_for("Hi there: HELLO one was received.")
            await in_thread(stack.server.restart)
            await api.prompt(sid, "HELLO two")  # most likely before attach is back: it must be replayed
            term.wait_for("Reconnected; resumed after #", timeout=30)
            term.wait_for("Hi there: HELLO two was received.", timeout=60)
            term.line("HELLO three")
            out = term.wait_for("Hi there: HELLO three was received.", timeout=60)
        for n in ("one", "two", "three"):
            assert out.count(f"Hi there: HELLO {n} was received.") == 1, out
        assert out.count("❯ HELLO two") == 1  # the prompt sent from elsewhere, shown once


async def test_a_revoked_login_ends_attach_with_4003(own_stack: Stack) -> None:
    stack = own_stack
    async with open_api(stack.server, stack.token) as client:
        api = Api(stack.server, stack.token, client)
        await new_session(api, stack, "revoked")
        r = await client.post("/v1/tokens", json={"name": "attach"}, headers=auth(stack.token))
        personal = r.json()
        with attach(stack.server, personal["token"], stack.home, "revok") as term:  # a title prefix
            term.wait_for("Connected; live.")
            r = await client.delete(f"/v1/tokens/{personal['id']}", headers=auth(stack.token))
            assert r.status_code == 200, r.text
            term.line("/reconnect")
            assert term.wait_exit() == 1
            out = squash(term.scrollback())
            assert "(close 4003)" in out and "Run `tether login` again" in out, out


def test_terminal_helper_reports_exit_status(tmp_path: pathlib.Path) -> None:
    with TmuxTerminal(["sh", "-c", "echo hi; exit 3"], {"PATH": "/usr/bin:/bin"}) as term:
        assert term.wait_exit() == 3
        assert "hi" in term.scrollback()
