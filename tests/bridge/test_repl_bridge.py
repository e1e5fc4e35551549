"""The in-process REPL bridge core against a real `tether server`, both generations, with a scripted
front end: the history flush then live messages (each once, in order), prompts and interrupts from a
client, the permission race both ways, titles, teardown (docs/protocol.md §12, §4.6)."""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
from tests.bridge.repl_rig import ask, fast_config, prompt, reply, rig
from tests.support.api import mint_token
from tests.support.server import ServerProcess
from tests.support.waiting import eventually
from tests.support.worker import Receiver, auth

from tether.protocol.messages import PermissionAllow, PermissionDeny

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


@pytest.fixture(scope="module", params=["v1", "v2"])
def srv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server whose bridge config turns repl_v2 off (v1 core) or on (v2 core)."""
    with ServerProcess(tmp_path_factory.mktemp(f"repl-{request.param}"), worker_transport=request.param,
                       limits={"rate_per_second": 0}) as proc:
        yield proc, mint_token(proc.data_dir)


def conversation(turns: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(turns):
        out += [prompt(f"Prompt number {i}."), reply(f"Answer number {i}."),
                {"type": "result", "subtype": "success", "uuid": f"r{i}"}]
    return out


def shown(sub: Receiver) -> list[str]:
    """The uuids of the user and assistant messages a subscriber received, in order."""
    return [f["uuid"] for f in sub.frames if f.get("type") in ("user", "assistant")]


async def test_history_flush_then_live_each_once_in_order(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        r.front.conversation.extend(conversation(5))
        await r.start()
        assert r.front.info is not None and r.front.info.core == ("v2" if server.overrides["worker_transport"] == "v2"
                                                                  else "v1")
        await r.connected()
        sub = await r.subscribe(from_seq=0)
        history = [m["uuid"] for m in r.front.conversation if m["type"] in ("user", "assistant")]
        await eventually(lambda: len(shown(sub)) >= 10, 20, message="the history")
        live = [prompt("A live prompt."), reply("A live answer.")]
        r.say(*live)
        r.rc.core.send_result(None)  # type: ignore[union-attr]
        await eventually(lambda: len(shown(sub)) >= 12 and any(f.get("type") == "result" for f in sub.frames), 20,
                         message="the live turn")
        assert shown(sub) == history + [m["uuid"] for m in live]
        r.say(*live)  # the front end hands the same messages again: nothing is sent twice
        r.say(prompt("Third."))
        await eventually(lambda: len(shown(sub)) >= 13, 20)
        assert len(shown(sub)) == len(set(shown(sub))) == 13
        r.rc.core.send_result(None)  # type: ignore[union-attr]
        await _status_is(r, "idle")  # v1: derived by the server; v2: reported by the worker
        await sub.close()
        await r.rc.stop()
        assert r.front.states[-1] == "off"
        assert (await r.session())["session_status"] == "archived"


async def test_a_client_prompt_reaches_the_front_end_once(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        sent = await r.post_prompt("From the phone.")
        await eventually(lambda: r.front.prompts, 20, message="the prompt")
        assert [p["uuid"] for p in r.front.prompts] == [sent["uuid"]]
        r.say(reply("Answered."))  # the front end's transcript already holds the prompt: not written back
        sub = await r.subscribe(from_seq=0)
        await eventually(lambda: any(f.get("type") == "assistant" for f in sub.frames), 20)
        users = [f for f in sub.frames if f.get("type") == "user"]
        assert [u["uuid"] for u in users] == [sent["uuid"]]
        assert r.rc.core is not None and r.rc.core.titles.title == "From the phone."
        await sub.close()


async def test_a_client_prompt_with_attachments_names_the_downloaded_files(srv: tuple[ServerProcess, str],
                                                                          tmp_path: pathlib.Path) -> None:
    """docs/protocol.md §7.6 for the REPL front ends: the files a client uploaded (``POST /v1/files``)
    are downloaded with the login into the conversation's directory and named in the prompt the
    front end gets; one that cannot be had is a warning on the session and a notice here."""
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        sub = await r.subscribe(None)
        notes = await _upload(r, "meeting notes.txt", b"NOTES-LINE-1\n")
        data = await _upload(r, "data.csv", b"a,b\n1,2\n")
        gone = {"file_uuid": "00000000-0000-4000-8000-000000000000", "file_name": "gone.txt"}
        sent = {**prompt("Read these."), "file_attachments": [notes, data, gone]}
        resp = await r.http.post(f"/v1/sessions/{r.session_id}/events", json={"events": [sent]}, headers=auth(token))
        assert resp.status_code == 200, resp.text
        await eventually(lambda: r.front.prompts, 20, message="the prompt")
        folder = r.home / ".tether" / "attachments" / r.session_id
        notes_path = folder / f"{notes['file_uuid'][:8]}-meeting_notes.txt"
        data_path = folder / f"{data['file_uuid'][:8]}-data.csv"
        [got] = r.front.prompts
        assert got["uuid"] == sent["uuid"] and "file_attachments" not in got
        assert got["message"]["content"] == f'@"{notes_path}" @"{data_path}" Read these.'
        assert notes_path.read_bytes() == b"NOTES-LINE-1\n" and data_path.read_bytes() == b"a,b\n1,2\n"
        warning = await sub.wait_for(lambda f: f.get("type") == "system" and f.get("subtype") == "warning", 20)
        assert warning["prompt_uuid"] == sent["uuid"] and "gone.txt" in warning["message"]
        assert [a["file_name"] for a in warning["attachments"]] == ["gone.txt"]
        assert any("gone.txt" in n for n in r.front.notices)
        assert r.rc.core is not None and r.rc.core.titles.title == "Read these."  # the title: the words typed
        await sub.close()


async def _upload(r: Any, name: str, content: bytes) -> dict[str, str]:
    resp = await r.http.post("/v1/files", files={"file": (name, content, "text/plain")}, headers=auth(r.token))
    assert resp.status_code == 200, resp.text
    return {"file_uuid": resp.json()["file_uuid"], "file_name": resp.json()["file_name"]}


async def test_an_interrupt_and_control_requests_from_a_client(srv: tuple[ServerProcess, str],
                                                               tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        sub = await r.subscribe(None)
        for rid, request in (("i1", {"subtype": "interrupt"}), ("m1", {"subtype": "set_model", "model": "haiku"}),
                             ("p1", {"subtype": "set_permission_mode", "mode": "bypassPermissions"})):
            await sub.ws.send(json.dumps({"type": "control_request", "request_id": rid, "request": request}))
        await eventually(lambda: r.front.interrupts == 1 and r.front.models == ["haiku"]
                         and r.front.modes == ["bypassPermissions"], 20, message="the control requests")
        errors = await eventually(lambda: [f for f in sub.frames if f.get("type") == "control_response"
                                           and f["response"].get("subtype") == "error"], 20)
        assert errors[0]["response"]["error"] == "bypass is not allowed here"
        await sub.close()


async def test_permission_answered_on_a_client_first(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        sub = await r.subscribe(None)
        question = ask(command="touch x")
        assert r.rc.core is not None and r.rc.core.ask_permission(question)
        frame = await sub.wait_for(lambda f: f.get("request_id") == question["request_id"], 20)
        await sub.ws.send(json.dumps({"type": "control_response", "response": {
            "subtype": "success", "request_id": frame["request_id"],
            "response": {"behavior": "allow", "updatedInput": {"command": "touch y"}}}}))
        await eventually(lambda: r.front.settled, 20, message="the remote answer")
        assert r.front.settled == [(question["request_id"], PermissionAllow({"command": "touch y"}))]
        assert not r.rc.core.answer_permission(question["request_id"], PermissionDeny("too late"))
        perms = (await r.http.get(f"/v1/sessions/{r.session_id}/permissions", headers=auth(token))).json()["data"]
        assert [(p["status"], p["answered_by"]) for p in perms] == [("allowed", perms[0]["answered_by"])]
        assert perms[0]["answered_by"] != "local"
        await sub.close()


async def test_permission_answered_at_the_terminal_first(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        sub = await r.subscribe(None)
        question = ask("Write", file_path="a.txt", content="x")
        assert r.rc.core is not None and r.rc.core.ask_permission(question)
        await sub.wait_for(lambda f: f.get("request_id") == question["request_id"], 20)
        assert r.rc.core.answer_permission(question["request_id"], PermissionDeny("No thanks"))
        await sub.wait_for(lambda f: f.get("type") == "control_cancel_request"
                           and f.get("request_id") == question["request_id"], 20)
        await sub.ws.send(json.dumps({"type": "control_response", "response": {
            "subtype": "success", "request_id": question["request_id"], "response": {"behavior": "allow"}}}))
        error = await sub.wait_for(lambda f: f.get("type") == "error", 20)
        assert error["error"]["type"] == "already_resolved"
        perms = (await r.http.get(f"/v1/sessions/{r.session_id}/permissions", headers=auth(token))).json()["data"]
        assert [(p["status"], p["answered_by"]) for p in perms] == [("denied", "local")]
        assert r.front.settled == []
        await sub.close()


async def test_titles(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        assert (await r.session())["title"].startswith("remote-control-")
        r.front.title_answer = "Parser work, by the model"
        r.say(prompt("Refactor the parser. Then test it."))
        await eventually(lambda: r.front.info and r.front.info.title == "Refactor the parser.", 20)
        await _title_is(r, "Refactor the parser.")
        r.say(prompt("add parser tests"))
        r.say(prompt("and docs for the parser"))
        await _title_is(r, "Parser work, by the model")
        assert r.front.title_requests and r.front.title_requests[0][-1] == "and docs for the parser"
        r.rc.rename("Chosen name")
        await _title_is(r, "Chosen name")
        for i in range(3):
            r.say(prompt(f"more prompts {i}"))
        await _title_is(r, "Chosen name")
        await r.rc.stop()


async def test_a_title_chosen_on_the_web_is_adopted(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        r.say(prompt("First prompt here."))
        await _title_is(r, "First prompt here.")
        resp = await r.http.patch(f"/v1/sessions/{r.session_id}", json={"title": "Renamed on the web"},
                                  headers=auth(token))
        assert resp.status_code == 200
        r.say(prompt("second"), prompt("third"))  # the regenerated title is refused by the server …
        await eventually(lambda: r.front.info is not None and r.front.info.title == "Renamed on the web"
                         and r.front.info.title_explicit, 20, message="the web's title in the front end")
        await _title_is(r, "Renamed on the web")  # … and the front end shows the web's title


async def _status_is(r: Any, status: str) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while (await r.session())["session_status"] != status:
        assert asyncio.get_running_loop().time() < deadline, (await r.session())["session_status"]
        await asyncio.sleep(0.05)


async def _title_is(r: Any, title: str) -> None:
    async def check() -> bool:
        return (await r.session())["title"] == title

    deadline = asyncio.get_running_loop().time() + 20
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, (await r.session())["title"]
        await asyncio.sleep(0.05)


async def test_explicit_name_and_summary_fallback(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start(name="Named by --name")
        await _title_is(r, "Named by --name")
        for text in ("one prompt about caching", "caching again", "caching third"):
            r.say(prompt(text))
        await _title_is(r, "Named by --name")
        assert r.front.title_requests == []
    async with rig(server, token, tmp_path / "home2") as r:
        await r.start()
        for text in ("one prompt about caching", "caching again", "caching third"):
            r.say(prompt(text))
        await _title_is(r, "One prompt caching third")  # the model had nothing to say: the deterministic summary


async def test_mirror_mode_is_outbound_only(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        r.front.conversation.extend(conversation(2))
        await r.start(mirror=True)
        assert r.front.info is not None and r.front.info.core == "v2" and r.front.info.mirror
        await r.connected()
        sub = await r.subscribe(from_seq=0)
        await eventually(lambda: len(shown(sub)) >= 4, 20, message="the mirrored history")
        assert (await r.session())["tags"] == ["ccr-mirror"]
        resp = await r.http.post(f"/v1/sessions/{r.session_id}/events", json={"events": [prompt("hi")]},
                                 headers=auth(token))
        assert resp.status_code == 403 and resp.json()["error"]["type"] == "permission_error"
        question = ask()
        assert r.rc.core is not None and not r.rc.core.ask_permission(question)  # no permission callbacks
        assert r.rc.core.answer_permission(question["request_id"], PermissionAllow({}))  # answered here, as usual
        await sub.close()


async def test_failed_start_counts_and_three_strikes_disable(tmp_path: pathlib.Path) -> None:
    with ServerProcess(tmp_path / "srv", limits={"rate_per_second": 0}) as server:
        token = await asyncio.to_thread(mint_token, server.data_dir)
        await asyncio.to_thread(server.admin, "policy", "--deny-remote-control")
        async with rig(server, token, tmp_path / "home", config=fast_config(auto_disable_after_s=0.2)) as r:
            for attempt in range(3):
                assert r.rc.start(r.tg)
                await eventually(lambda: not r.rc.active, 20, message=f"attempt {attempt} to end")
            assert r.front.notices[0].startswith("Remote Control failed · disabled by your organisation's policy")
            assert not r.rc.start(r.tg)
            assert "disabled after 3 failed attempts" in r.front.notices[-1]


async def test_relay_and_terminal_requests(srv: tuple[ServerProcess, str], tmp_path: pathlib.Path) -> None:
    """What `tether claude` adds to the core: an agent's output relayed as is (results, system
    messages, stream events live only), each conversation message once even when the mirror hands
    it again; Tether's terminal requests go to the front end, whose verdict the client gets."""
    server, token = srv
    async with rig(server, token, tmp_path / "home") as r:
        await r.start()
        await r.connected()
        core = r.rc.core
        assert core is not None
        sub = await r.subscribe(from_seq=0)
        answer = reply("Relayed answer.")
        core.relay({"type": "stream_event", "uuid": "se-1", "event": {"type": "message_start"}})
        core.relay(answer)
        core.relay({"type": "system", "subtype": "tether_terminal", "uuid": "tt-1", "state": "remote"})
        core.relay({"type": "result", "subtype": "success", "is_error": False, "uuid": "res-1", "result": "done"})
        await sub.wait_for(lambda f: f.get("uuid") == "res-1", 20)
        r.say(answer)  # the mirror reads the same message from the transcript: not sent again
        core.relay(answer)
        r.say(prompt("after"))
        await sub.wait_for(lambda f: f.get("type") == "user", 20)
        stored = [f.get("uuid") for f in sub.frames if not f.get("ephemeral") and f.get("type") != "session_update"]
        assert stored.count(answer["uuid"]) == 1 and "tt-1" in stored
        assert any(f.get("ephemeral") and f.get("type") == "stream_event" for f in sub.frames)
        r.front.terminal_answer = "Already at the terminal."
        for rid, subtype in (("t1", "tether_take_over"), ("t2", "tether_return_to_terminal")):
            await sub.ws.send(json.dumps({"type": "control_request", "request_id": rid,
                                          "request": {"subtype": subtype, "interrupt": True}}))
        await eventually(lambda: len(r.front.terminal_requests) == 2, 20, message="the terminal requests")
        assert r.front.terminal_requests == [("tether_take_over", {"subtype": "tether_take_over", "interrupt": True}),
                                             ("tether_return_to_terminal",
                                              {"subtype": "tether_return_to_terminal", "interrupt": True})]
        errors = await eventually(lambda: [f for f in sub.frames if f.get("type") == "control_response"
                                           and f["response"].get("subtype") == "error"
                                           and f["response"].get("request_id") in ("t1", "t2")], 20)
        assert errors[0]["response"]["error"] == "Already at the terminal."
        await sub.close()
