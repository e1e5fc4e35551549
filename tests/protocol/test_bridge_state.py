"""BridgeState, its footer label, the 10 s auto-disable and the three-strikes start rule (docs/protocol.md §12.10)."""

from __future__ import annotations

from tether.protocol.bridge_state import BridgeStatus, InitFailures


def test_footer_precedence() -> None:
    s = BridgeStatus()
    assert s.footer_label() == "Remote Control connecting…" and not s.active
    assert s.update("ready", None, 1.0) and s.footer_label() == "Remote Control active"
    assert s.update("connected", None, 2.0) and s.footer_label() == "Remote Control active"
    assert s.update("reconnecting", "transport lost", 3.0) and s.footer_label() == "Remote Control reconnecting"
    assert not s.update("reconnecting", "transport lost", 4.0)
    assert s.update("reconnecting", "JWT refresh", 5.0) and s.since == 3.0  # same state, new detail
    assert s.update("failed", "session ended", 6.0) and s.footer_label() == "Remote Control failed"


def test_failed_is_final_and_disables_after_ten_seconds() -> None:
    s = BridgeStatus()
    assert s.auto_disable_at() is None
    s.update("failed", "gave up", 100.0)
    assert not s.update("connected", None, 101.0) and s.state == "failed"
    assert s.auto_disable_at() == 110.0
    assert not s.should_disable(109.9) and s.should_disable(110.0)


def test_three_failed_starts_disable_remote_control() -> None:
    f = InitFailures()
    assert not f.failed("server down") and not f.failed("server down")
    f.succeeded()
    assert f.count == 0
    assert not f.failed("a") and not f.failed("b")
    assert f.failed("c") and f.disabled
    assert "3 failed attempts" in f.message() and "(last: c)" in f.message()
