"""The registry of open sockets and streams by credential (tether.server.streams), directly."""

from __future__ import annotations

from tether.server.streams import Holder, OpenStreams, token_key, user_key, work_key


def test_close_key_reaches_only_its_holders_and_once() -> None:
    streams = OpenStreams()
    woken: list[str] = []
    a, b = Holder(lambda: woken.append("a"), "member"), Holder(lambda: woken.append("b"), "member")
    with streams.hold(a, [token_key("t1"), user_key("u1")]), streams.hold(b, [token_key("t2"), user_key("u1")]):
        assert streams.close_key(token_key("t1"), 4003, "revoked") == 1
        assert a.closed == (4003, "revoked") and b.closed is None
        assert streams.close_key(token_key("t1"), 4003, "again") == 0  # asked once only
        assert woken == ["a"]
    assert streams.count(token_key("t2")) == 0 and streams.count(user_key("u1")) == 0  # released


def test_role_change_closes_what_holds_more() -> None:
    streams = OpenStreams()
    viewer, member = Holder(lambda: None, "viewer"), Holder(lambda: None, "member")
    with streams.hold(viewer, [user_key("u")]), streams.hold(member, [user_key("u")]):
        assert streams.role_changed("u", "viewer", 4003, "role") == 1
        assert member.closed is not None and viewer.closed is None
        assert streams.role_changed("u", "owner", 4003, "role") == 0


def test_work_key_and_unknown_keys() -> None:
    streams = OpenStreams()
    holder = Holder(lambda: None)
    with streams.hold(holder, [work_key("work_1")]):
        assert streams.close_key(work_key("work_2"), 4003, "x") == 0
        assert streams.close_key(work_key("work_1"), 4003, "stopped") == 1
