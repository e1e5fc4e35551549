"""Instance liveness and whose v1 workers an instance may mark gone (tether.protocol.instances)."""

from __future__ import annotations

import pytest

from tether.protocol.instances import MISSED_BEATS, InstanceLiveness, may_release


def test_an_instance_is_alive_until_it_misses_its_beats() -> None:
    live = InstanceLiveness(heartbeat_s=10.0)
    assert live.ttl == 10.0 * MISSED_BEATS == 30.0
    assert live.alive_since(100.0) == 70.0
    assert live.alive(70.0, 100.0) and live.alive(99.0, 100.0)
    assert not live.alive(69.9, 100.0)
    assert not live.alive(None, 100.0)  # never beat


@pytest.mark.parametrize(("heartbeat_s", "missed"), [(0.0, 3), (-1.0, 3), (10.0, 0)])
def test_a_heartbeat_that_cannot_tell_is_refused(heartbeat_s: float, missed: int) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        InstanceLiveness(heartbeat_s, missed)


def test_a_worker_of_no_known_instance_or_a_gone_one_may_be_released() -> None:
    assert may_release(None, "a", {"a", "b"}, starting=False)
    assert may_release("c", "a", {"a", "b"}, starting=False)
    assert may_release("c", "a", {"b"}, starting=True)


def test_a_worker_another_live_instance_holds_is_left_alone() -> None:
    assert not may_release("b", "a", {"a", "b"}, starting=False)
    assert not may_release("b", "a", {"b"}, starting=True)  # a restart of A leaves B's workers connected


def test_an_instance_releases_its_own_only_when_it_starts() -> None:
    assert may_release("a", "a", {"a"}, starting=True)
    assert not may_release("a", "a", {"a"}, starting=False)
