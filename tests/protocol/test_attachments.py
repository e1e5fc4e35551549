"""Which attachments a prompt has, where they are stored, and the prompt the agent gets (docs/protocol.md §7.6)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import attachments as pa

UUID = "0f8e3c1a-1111-4222-8333-444455556666"


def prompt(content: object, attachments: object) -> dict[str, object]:
    return {"type": "user", "uuid": "u-1", "session_id": "", "parent_tool_use_id": None,
            "message": {"role": "user", "content": content}, "file_attachments": attachments}


def test_names_are_sanitised_and_keep_their_extension() -> None:
    assert pa.sanitize_name("notes.txt") == "notes.txt"
    assert pa.sanitize_name("../../etc/passwd") == "passwd"
    assert pa.sanitize_name("C:\\Users\\me\\my report (final).pdf") == "my_report_final_.pdf"
    assert pa.sanitize_name("..") == "file"
    assert pa.sanitize_name(".bashrc") == "bashrc"
    assert pa.sanitize_name('a"b @c.png') == "a_b_c.png"
    assert pa.sanitize_name("") == "file"
    long = pa.sanitize_name("x" * 300 + ".png")
    assert len(long) == pa.MAX_NAME_CHARS and long.endswith(".png")
    assert len(pa.sanitize_name("y" * 300)) == pa.MAX_NAME_CHARS


@settings(deadline=None, max_examples=300)
@given(st.text())
def test_any_name_becomes_one_safe_path_component(name: str) -> None:
    safe = pa.sanitize_name(name)
    assert safe and len(safe) <= pa.MAX_NAME_CHARS
    assert "/" not in safe and "\\" not in safe and '"' not in safe and not safe.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in safe)


def test_attachments_of_a_prompt() -> None:
    msg = prompt("look", [{"file_uuid": UUID, "file_name": "notes .txt"},
                          {"file_uuid": UUID, "file_name": "again.txt"},  # the same file twice: once
                          {"file_uuid": "../../x", "file_name": "evil"},
                          {"file_name": "no-uuid.txt"},
                          "not an object"])
    found, skipped = pa.attachments_of(msg)
    assert found == [pa.Attachment(UUID, "notes .txt", "0f8e3c1a-notes_.txt")]
    assert [(s.file_name, s.reason) for s in skipped] == [
        ("evil", "it has no valid file_uuid"), ("no-uuid.txt", "it has no valid file_uuid"),
        ("?", "the entry is not an object")]


def test_only_user_messages_with_a_list_have_attachments() -> None:
    assert pa.attachments_of({"type": "user", "message": {"role": "user", "content": "x"}}) == ([], [])
    assert pa.attachments_of(prompt("x", "nope")) == ([], [])
    assert pa.attachments_of({"type": "assistant", "file_attachments": [{"file_uuid": UUID}]}) == ([], [])


def test_at_most_so_many_attachments_per_prompt() -> None:
    entries = [{"file_uuid": f"id-{i}", "file_name": f"f{i}.txt"} for i in range(pa.MAX_ATTACHMENTS + 2)]
    found, skipped = pa.attachments_of(prompt("x", entries))
    assert len(found) == pa.MAX_ATTACHMENTS
    assert [s.file_name for s in skipped] == [f"f{pa.MAX_ATTACHMENTS}.txt", f"f{pa.MAX_ATTACHMENTS + 1}.txt"]


def test_where_attachments_go() -> None:
    assert pa.session_folder("session_01abc") == ".tether/attachments/session_01abc"
    assert pa.reference_path("/work/proj", ".tether/attachments/s/a.txt") == "/work/proj/.tether/attachments/s/a.txt"
    # a quoted reference cannot hold a double quote: relative to the agent's cwd then
    assert pa.reference_path('/work/"odd"', ".tether/attachments/s/a.txt") == ".tether/attachments/s/a.txt"


def test_references_go_in_front_of_a_string_prompt() -> None:
    msg = prompt("what is in these?", [{"file_uuid": UUID, "file_name": "a.txt"}])
    out = pa.with_references(msg, ["/p/a.txt", "/p/b.png"])
    assert out["message"]["content"] == '@"/p/a.txt" @"/p/b.png" what is in these?'
    assert "file_attachments" not in out
    assert out["uuid"] == "u-1" and out["type"] == "user" and out["parent_tool_use_id"] is None
    assert msg["message"]["content"] == "what is in these?"  # the input is not changed


def test_references_go_in_front_of_the_last_text_block() -> None:
    blocks = [{"type": "text", "text": "first"}, {"type": "image", "source": {}}, {"type": "text", "text": "last"},
              {"type": "image", "source": {}}]
    out = pa.with_references(prompt(blocks, []), ["/p/a.txt"])
    assert out["message"]["content"] == [{"type": "text", "text": "first"}, {"type": "image", "source": {}},
                                         {"type": "text", "text": '@"/p/a.txt" last'}, {"type": "image", "source": {}}]
    assert blocks[2]["text"] == "last"


def test_a_prompt_without_text_gets_a_text_block() -> None:
    out = pa.with_references(prompt([{"type": "image", "source": {}}], []), ["/p/a.txt"])
    assert out["message"]["content"][-1] == {"type": "text", "text": '@"/p/a.txt"'}


def test_nothing_stored_leaves_the_prompt_as_it_was_but_resolved() -> None:
    msg = prompt("hi", [{"file_uuid": UUID, "file_name": "a.txt"}])
    out = pa.with_references(msg, [])
    assert out["message"] == msg["message"] and "file_attachments" not in out


def test_the_warning_for_skipped_attachments() -> None:
    one = pa.skipped_warning([pa.Skipped("a.txt", UUID, "the server answered 404 (No such file.)")],
                             prompt_uuid="u-1", uuid="w-1", session_id="session_x")
    assert one == {
        "type": "system", "subtype": "warning", "warning": "attachments_skipped",
        "message": "The attachment a.txt did not reach the agent: the server answered 404 (No such file.).",
        "attachments": [{"file_uuid": UUID, "file_name": "a.txt", "reason": "the server answered 404 (No such file.)"}],
        "prompt_uuid": "u-1", "uuid": "w-1", "session_id": "session_x"}
    two = pa.skipped_warning([pa.Skipped("a", None, "r1"), pa.Skipped("b", "x", "r2")], prompt_uuid=None, uuid="w")
    assert two["message"] == "2 attachments did not reach the agent: a (r1); b (r2)."
