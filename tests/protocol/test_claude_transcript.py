"""Claude Code's transcript rules (tether.protocol.claude_transcript): the cwd slug, which records
mirror as what, conversation order by parentUuid, the follower's reading plan, hook events. The
record shapes are those the pinned CLI (2.1.197) wrote in a measured session."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.claude_transcript import (
    ChainOrder,
    FileState,
    _base36,
    clean_local_command,
    config_dir,
    interrupted_result,
    is_prompt,
    map_record,
    parse_hook_event,
    parse_line,
    project_slug,
    reading_plan,
    record_time,
    transcript_path,
)

SID = "11111111-2222-3333-4444-555555555555"


def rec(kind: str, uid: str | None, parent: str | None = None, **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "parentUuid": parent, "isSidechain": False, "sessionId": SID,
                           "cwd": "/tmp/p", "timestamp": "2026-12-03T13:46:14.212Z", **fields}
    if uid is not None:
        out["uuid"] = uid
    return out


# ---- the slug ------------------------------------------------------------------------------------


def test_slug_replaces_every_non_alphanumeric_character() -> None:
    assert project_slug("/tmp/cx/proj") == "-tmp-cx-proj"
    assert project_slug("/tmp/cx/my_proj.v2 x@y") == "-tmp-cx-my-proj-v2-x-y"  # measured with the CLI
    assert project_slug("/home/ré/ö") == "-home-r---"


def test_a_long_slug_is_cut_and_gets_the_clis_hash() -> None:
    cwd = "/" + "a" * 250
    slug = project_slug(cwd)
    assert slug.startswith("-" + "a" * 199 + "-") and len(slug) > 200
    # JavaScript: Math.abs(h).toString(36), h = (h << 5) - h + code | 0 over the original path
    h = 0
    for ch in cwd:
        h = (h * 31 + ord(ch)) & 0xFFFFFFFF
    h = h - (1 << 32) if h & 0x80000000 else h
    n, digits = abs(h), ""
    while n:
        n, r = divmod(n, 36)
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"[r] + digits
    assert slug == "-" + "a" * 199 + "-" + digits



@settings(deadline=None)
@given(st.integers(min_value=0, max_value=2**31))
def test_the_hash_suffix_is_base36_like_javascripts_to_string(n: int) -> None:
    digits = _base36(n)
    assert int(digits, 36) == n and digits == digits.lower()
    assert digits == "0" or not digits.startswith("0")


def test_an_astral_character_counts_as_two_code_units() -> None:
    assert project_slug("/x😀") == "-x--"


def test_paths() -> None:
    assert config_dir({}, "/home/u") == "/home/u/.claude"
    assert config_dir({"CLAUDE_CONFIG_DIR": "/cfg"}, "/home/u") == "/cfg"
    assert transcript_path("/home/u/.claude", "/tmp/p", SID) == f"/home/u/.claude/projects/-tmp-p/{SID}.jsonl"


# ---- mapping ----------------------------------------------------------------------------------------


def test_a_typed_prompt_mirrors_as_a_user_message_keeping_its_uuid() -> None:
    mapped = map_record(rec("user", "u1", None, message={"role": "user", "content": "hello one"},
                            promptId="p", permissionMode="default", origin={"kind": "human"}))
    assert mapped.kind == "message" and not mapped.ends_turn
    assert mapped.message == {"type": "user", "uuid": "u1", "session_id": "", "parent_tool_use_id": None,
                              "message": {"role": "user", "content": "hello one"}}
    assert is_prompt(mapped.message)


def test_assistant_and_tool_result_records() -> None:
    inner = {"id": "msg_1", "role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Write",
                                                               "input": {"file_path": "hello.txt"}}]}
    a = map_record(rec("assistant", "a1", "u1", message=inner, requestId="req"))
    assert a.message == {"type": "assistant", "uuid": "a1", "session_id": "", "parent_tool_use_id": None,
                         "message": inner}
    result = rec("user", "t1", "a1", message={"role": "user", "content": [
        {"tool_use_id": "toolu_1", "type": "tool_result", "content": "File created"}]},
        toolUseResult={"type": "create", "filePath": "hello.txt"}, sourceToolAssistantUUID="a1")
    t = map_record(result)
    assert t.kind == "message" and t.message is not None
    assert t.message["tool_use_result"] == {"type": "create", "filePath": "hello.txt"}
    assert not is_prompt(t.message)


def test_turn_ends_and_interrupts() -> None:
    assert map_record(rec("system", "s1", "a1", subtype="turn_duration", durationMs=426)).kind == "turn_end"
    marker = map_record(rec("user", "i1", "t1", message={"role": "user", "content": [
        {"type": "text", "text": "[Request interrupted by user for tool use]"}]}))
    assert marker.kind == "message" and marker.ends_turn and marker.interrupted
    assert marker.message is not None and not is_prompt(marker.message)
    result = interrupted_result("session_x", "r1")
    assert result["type"] == "result" and result["is_error"] and result["uuid"] == "r1"


def test_local_commands_are_mirrored_readable() -> None:
    name = map_record(rec("system", "c1", None, subtype="local_command", content=(
        "<command-name>/model</command-name>\n            <command-message>model</command-message>\n"
        "            <command-args></command-args>"), level="info", isMeta=False))
    assert name.message is not None and name.message["content"] == "/model"
    out = map_record(rec("system", "c2", "c1", subtype="local_command",
                         content="<local-command-stdout>Kept model as \x1b[1mOpus 4.8\x1b[22m</local-command-stdout>"))
    assert out.message == {"type": "system", "subtype": "local_command", "uuid": "c2", "session_id": "",
                           "content": "Kept model as Opus 4.8"}
    assert clean_local_command("<command-name>/cost</command-name><command-args>x y</command-args>") == "/cost x y"
    assert map_record(rec("system", "c3", None, subtype="local_command", content="<local-command-stdout> "
                                                                                  "</local-command-stdout>")).kind == "skip"


def test_what_is_skipped() -> None:
    skipped = [
        {"type": "mode", "mode": "normal", "sessionId": SID},
        {"type": "permission-mode", "permissionMode": "default", "sessionId": SID},
        {"type": "file-history-snapshot", "messageId": "m", "snapshot": {}},
        {"type": "last-prompt", "lastPrompt": "x", "leafUuid": "a"},
        {"type": "queue-operation", "operation": "enqueue"},
        rec("attachment", "at1", "u1", attachment={"type": "skill_listing"}),
        rec("system", "s2", "a1", subtype="stop_hook_summary"),
        rec("user", "m1", None, message={"role": "user", "content": "<local-command-caveat>…"}, isMeta=True),
        rec("assistant", "sc1", None, message={"role": "assistant", "content": []}, isSidechain=True),
        rec("user", None, None, message={"role": "user", "content": "no uuid"}),
        rec("user", "x1", None),
    ]
    assert [map_record(r).kind for r in skipped] == ["skip"] * len(skipped)


def test_compact_boundary_mirrors_as_system() -> None:
    mapped = map_record(rec("system", "cb", None, subtype="compact_boundary", compactMetadata={"trigger": "manual"}))
    assert mapped.message == {"type": "system", "subtype": "compact_boundary", "uuid": "cb", "session_id": "",
                              "compact_metadata": {"trigger": "manual"}}



def test_a_compact_boundary_without_metadata() -> None:
    mapped = map_record(rec("system", "cb", None, subtype="compact_boundary", compactMetadata="?"))
    assert mapped.message == {"type": "system", "subtype": "compact_boundary", "uuid": "cb", "session_id": ""}


def test_a_tool_result_without_its_structured_result_mirrors_without_it() -> None:
    mapped = map_record(rec("user", "t1", "a1", message={"role": "user", "content": [
        {"tool_use_id": "toolu_1", "type": "tool_result", "content": "ok"}]}))
    assert mapped.kind == "message" and mapped.message is not None and "tool_use_result" not in mapped.message


def test_a_user_record_without_text_or_blocks_is_skipped() -> None:
    mapped = map_record(rec("user", "u", None, message={"role": "user", "content": 42}))
    assert mapped.kind == "skip" and mapped.reason == "no content"


def test_a_local_command_record_without_tags_mirrors_its_text() -> None:
    mapped = map_record(rec("system", "c", None, subtype="local_command", content="  Compacted.  "))
    assert mapped.message is not None and mapped.message["content"] == "Compacted."
    assert clean_local_command("<bash-input>ls -a</bash-input>") == "! ls -a"
    assert clean_local_command("<command-message>x</command-message>") == "", "tags without output: nothing to show"


def test_what_is_a_prompt() -> None:
    assert is_prompt({"type": "user", "message": {"content": [{"type": "text", "text": "fix it"}]}})
    assert not is_prompt({"type": "assistant", "message": {"content": "fix it"}})
    assert not is_prompt({"type": "user", "message": {"content": None}}), "nothing was asked"
    assert not is_prompt({"type": "user", "message": "fix it"})


# ---- order ------------------------------------------------------------------------------------------


def uuids(records: list[dict[str, Any]]) -> list[str]:
    return [r["uuid"] for r in records]


def test_the_measured_first_turn_comes_out_in_conversation_order() -> None:
    # the file order of a new session's first turn (2.1.197): the assistant before its prompt
    lines = [rec("assistant", "a", "att2"), rec("system", "td", "a", subtype="turn_duration"),
             rec("user", "u", None), rec("attachment", "att1", "u"), rec("attachment", "att2", "att1")]
    order = ChainOrder(hold_s=2.0)
    out: list[dict[str, Any]] = []
    for line in lines:
        out += order.push(line, now=0.0)
    assert uuids(out) == ["u", "att1", "att2", "a", "td"]
    assert order.held == 0


def test_a_record_whose_parent_never_comes_is_released_after_the_hold() -> None:
    order = ChainOrder(hold_s=2.0)
    assert order.push(rec("assistant", "a", "missing"), now=10.0) == []
    assert order.push(rec("system", "b", "a"), now=10.5) == []
    assert order.expire(now=11.9) == []
    assert uuids(order.expire(now=12.0)) == ["a", "b"]
    assert uuids(order.push(rec("user", "c", "b"), now=12.1)) == ["c"]



def test_a_sibling_released_by_the_hold_leaves_the_other_waiting_for_their_parent() -> None:
    order = ChainOrder(hold_s=2.0)
    order.push(rec("assistant", "a", "p"), now=10.0)
    order.push(rec("assistant", "b", "p"), now=11.0)
    assert uuids(order.expire(now=12.0)) == ["a"]
    assert order.held == 1
    assert uuids(order.push(rec("user", "p", None), now=12.5)) == ["p", "b"]
    assert order.held == 0 and order.expire(now=99.0) == []


def test_a_uuid_is_released_once() -> None:
    order = ChainOrder()
    assert uuids(order.push(rec("user", "u", None), 0.0)) == ["u"]
    assert order.push(rec("user", "u", None), 0.0) == []  # the file was read again (truncated or replaced)
    assert order.push(rec("mode", None), 0.0) == []
    assert order.known("u") and not order.known("v")


def test_flush_releases_everything_in_file_order() -> None:
    order = ChainOrder()
    order.push(rec("assistant", "b", "x"), 0.0)
    order.push(rec("assistant", "a", "y"), 0.0)
    order.push(rec("assistant", "c", "b"), 0.0)
    assert uuids(order.flush()) == ["b", "c", "a"]


@given(st.permutations(list(range(8))))
def test_any_file_order_of_a_chain_is_released_as_the_chain(perm: list[int]) -> None:
    chain = [rec("user", f"r{i}", f"r{i - 1}" if i else None) for i in range(8)]
    order = ChainOrder(hold_s=100.0)
    out: list[dict[str, Any]] = []
    for i in perm:
        out += order.push(chain[i], 0.0)
    assert uuids(out) == [f"r{i}" for i in range(8)]


# ---- reading ----------------------------------------------------------------------------------------


def test_reading_plan() -> None:
    assert reading_plan(None, None, 0) == "wait"
    assert reading_plan(FileState(1, 0), None, 0) == "wait"
    assert reading_plan(FileState(1, 10), None, 0) == "read"
    assert reading_plan(FileState(1, 10), 1, 10) == "wait"
    assert reading_plan(FileState(1, 12), 1, 10) == "read"
    assert reading_plan(FileState(1, 5), 1, 10) == "restart"  # truncated
    assert reading_plan(FileState(2, 50), 1, 10) == "restart"  # replaced
    assert reading_plan(None, 1, 10) == "wait"  # gone for now (being replaced)


def test_parse_line() -> None:
    assert parse_line(b'{"type": "user"}') == {"type": "user"}
    assert parse_line(b"  ") is None
    assert parse_line(b"[1, 2]") is None
    assert parse_line(b'{"type": "us') is None


def test_hook_events() -> None:
    start = {"session_id": SID, "transcript_path": f"/h/.claude/projects/-p/{SID}.jsonl", "cwd": "/p",
             "hook_event_name": "SessionStart", "source": "resume"}
    event = parse_hook_event(json.dumps(start).encode())
    assert event is not None and (event.name, event.session_id, event.source) == ("SessionStart", SID, "resume")
    ask = {"session_id": SID, "transcript_path": "/t", "hook_event_name": "PermissionRequest", "tool_name": "Bash",
           "tool_input": {"command": "touch x"}, "permission_suggestions": []}
    event = parse_hook_event(json.dumps(ask).encode())
    assert event is not None and event.tool_name == "Bash" and event.tool_input == {"command": "touch x"}
    assert parse_hook_event(b'{"no": "name"}') is None
    assert parse_hook_event(b"garbage") is None


def test_slash_and_shell_commands_typed_in_the_tui_are_local_commands_not_prompts() -> None:
    # /exit, as 2.1.197 writes it: a meta caveat, the command, its output, all as user records
    caveat = rec("user", "c0", None, message={"role": "user", "content": "<local-command-caveat>Caveat: …"
                                              "</local-command-caveat>"}, isMeta=True)
    command = rec("user", "c1", "c0", message={"role": "user", "content": (
        "<command-name>/exit</command-name>\n            <command-message>exit</command-message>\n"
        "            <command-args></command-args>")})
    output = rec("user", "c2", "c1", message={"role": "user", "content": "<local-command-stdout>Bye!"
                                                                           "</local-command-stdout>"})
    bash = rec("user", "b1", None, message={"role": "user", "content": "<bash-input>ls</bash-input>"})
    bash_out = rec("user", "b2", "b1", message={"role": "user", "content": "<bash-stdout>a.txt</bash-stdout>"
                                                                             "<bash-stderr></bash-stderr>"})
    assert map_record(caveat).kind == "skip"
    texts = []
    for r in (command, output, bash, bash_out):
        mapped = map_record(r)
        assert mapped.message is not None and mapped.message["subtype"] == "local_command"
        assert not is_prompt(mapped.message)
        texts.append(mapped.message["content"])
    assert texts == ["/exit", "Bye!", "! ls", "a.txt"]
    empty = rec("user", "b3", None, message={"role": "user", "content": "<bash-stdout></bash-stdout>"})
    assert map_record(empty).kind == "skip"


def test_record_time() -> None:
    assert record_time({"timestamp": "2026-12-03T13:46:14.212Z"}) == 1796305574.212
    assert record_time({"timestamp": "yesterday"}) is None
    assert record_time({"type": "mode"}) is None
