from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import leases as l
from tether.protocol.leases import Lease


def test_lifecycle() -> None:
    q = Lease("work_1")
    assert q.state == "queued" and l.deliverable(q, 0.0, 5.0)
    d = l.deliver(q, 100.0, ttl=300.0)
    assert d.state == "delivered" and d.delivered_at == 100.0 and d.lease_expires_at == 400.0
    a = l.ack(d, 101.0, ttl=300.0)
    assert a.state == "acked" and a.lease_expires_at == 401.0
    assert l.ack(a, 102.0).state == "acked"  # idempotent
    e = l.extend(a, 200.0, ttl=300.0)
    assert e.lease_expires_at == 500.0 and e.state == "acked"
    s = l.stop(e)
    assert s.state == "stopped" and s.terminal and s.lease_expires_at is None
    assert l.stop(s).state == "stopped"


def test_redelivery_of_unacked_items() -> None:
    d = l.deliver(Lease("w"), 10.0)
    assert not l.should_redeliver(d, 15.0, 5.0)  # exactly 5 s old: not older than
    assert l.should_redeliver(d, 15.001, 5.0)
    assert l.deliverable(d, 16.0, 5.0) and not l.deliverable(d, 11.0, 5.0)
    again = l.deliver(d, 16.0)
    assert again.delivered_at == 16.0
    acked = l.ack(d, 12.0)
    assert not l.should_redeliver(acked, 1e9, 5.0)
    assert not l.should_redeliver(Lease("q"), 1e9, 5.0)


def test_lease_expiry() -> None:
    a = l.ack(l.deliver(Lease("w"), 0.0, ttl=300.0), 0.0, ttl=300.0)
    assert not l.lease_expired(a, 299.9)
    assert l.lease_expired(a, 300.0)
    assert not l.lease_expired(l.extend(a, 299.0, ttl=300.0), 300.0)
    assert not l.lease_expired(Lease("q"), 1e9)
    assert not l.lease_expired(l.stop(a), 1e9)


def test_terminal_items_are_gone() -> None:
    s = l.supersede(l.deliver(Lease("w"), 0.0))
    assert s.state == "superseded" and l.supersede(s).state == "superseded"
    for op in (lambda x: l.extend(x, 1.0), lambda x: l.ack(x, 1.0), lambda x: l.deliver(x, 1.0), l.stop):
        with pytest.raises(l.LeaseGone):
            op(s)
    with pytest.raises(l.LeaseGone):
        l.supersede(l.stop(Lease("w")))
    assert not l.deliverable(s, 1e9, 0.0)


def test_invalid_transitions() -> None:
    with pytest.raises(l.LeaseStateError):
        l.ack(Lease("w"), 0.0)
    with pytest.raises(l.LeaseStateError):
        l.extend(Lease("w"), 0.0)
    with pytest.raises(l.LeaseStateError):
        l.deliver(l.ack(l.deliver(Lease("w"), 0.0), 0.0), 1.0)
    assert issubclass(l.LeaseGone, l.LeaseStateError) and issubclass(l.LeaseStateError, ValueError)


def test_environment_liveness() -> None:
    # 2 × max(poll interval, 4 s) + 8 s (docs/protocol.md §3)
    assert l.environment_online(100.0, 115.9, 2.0)
    assert not l.environment_online(100.0, 116.0, 2.0)
    assert l.environment_online(100.0, 127.9, 10.0) and not l.environment_online(100.0, 128.0, 10.0)
    assert not l.environment_online(None, 0.0)
    assert not l.environment_expired(0.0, 4 * 3600)
    assert l.environment_expired(0.0, 4 * 3600 + 0.001)
    assert not l.environment_expired(0.0, 10.0, ttl_s=10.0) and l.environment_expired(0.0, 10.5, ttl_s=10.0)


def test_a_heartbeat_extends_the_lease_and_takes_a_delivered_item() -> None:
    d = l.deliver(Lease("w"), 0.0, ttl=300.0)
    beat = l.heartbeat(d, 10.0, ttl=300.0)
    assert beat.state == "acked" and beat.lease_expires_at == 310.0
    assert l.heartbeat(beat, 20.0, ttl=300.0) == l.extend(beat, 20.0, ttl=300.0)
    with pytest.raises(l.LeaseStateError):
        l.heartbeat(Lease("q"), 0.0)
    with pytest.raises(l.LeaseGone):
        l.heartbeat(l.stop(beat), 30.0)
    assert l.DEFAULT_LEASE_TTL_S == 300 and l.DEFAULT_RECLAIM_OLDER_THAN_S == 5


@settings(deadline=None)
@given(st.floats(0, 1e6), st.floats(0.001, 1e4), st.floats(0, 1e4))
def test_extend_never_expires_before_ttl(now: float, ttl: float, later: float) -> None:
    a = l.extend(l.ack(l.deliver(Lease("w"), 0.0), 0.0), now, ttl)
    assert l.lease_expired(a, now + later) == (now + later >= now + ttl)
