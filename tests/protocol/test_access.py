"""Pure rules of tether.protocol.access: roles held by open sockets, what a worker token's work allows."""

from __future__ import annotations

import pytest

from tether.protocol.access import NO_SUCCESSOR, credential_verdict, role_fell, role_rank, work_verdict


@pytest.mark.parametrize(("held", "now", "fell"), [
    ("owner", "owner", False), ("owner", "member", True), ("owner", "viewer", True),
    ("member", "owner", False), ("member", "member", False), ("member", "viewer", True),
    ("viewer", "viewer", False), ("viewer", "owner", False),
    ("viewer", None, True),  # the user is gone
    ("viewer", "emperor", True),  # an unknown role may do nothing
])
def test_role_fell(held: str, now: str | None, fell: bool) -> None:
    assert role_fell(held, now) is fell


def test_role_ranks_are_ordered() -> None:
    assert role_rank("viewer") < role_rank("member") < role_rank("owner")
    assert role_rank("") < role_rank("viewer")


@pytest.mark.parametrize("state", ["queued", "delivered", "acked"])
def test_live_work_allows_whatever_comes_after(state: str) -> None:
    assert work_verdict(state) == "live"
    assert work_verdict(state, successor_acked_at=100.0, now=1000.0, handover_s=30) == "live"


@pytest.mark.parametrize("state", ["stopped", "superseded", "missing", None])
def test_ended_work_without_successor_is_gone(state: str | None) -> None:
    assert work_verdict(state, successor_acked_at=NO_SUCCESSOR, now=1000.0, handover_s=30) == "gone"


@pytest.mark.parametrize("state", ["stopped", "superseded"])
def test_ended_work_is_handed_over_then_replaced(state: str) -> None:
    # the successor is queued or delivered, not yet acked: the old token still writes
    assert work_verdict(state, successor_acked_at=None, now=1000.0, handover_s=30) == "live"
    # acked 10 s ago: writes in flight during the swap still land
    assert work_verdict(state, successor_acked_at=990.0, now=1000.0, handover_s=30) == "live"
    # acked 30 s ago or more: replaced
    assert work_verdict(state, successor_acked_at=970.0, now=1000.0, handover_s=30) == "replaced"
    assert work_verdict(state, successor_acked_at=1000.0, now=1000.0, handover_s=0) == "replaced"


def test_credential_verdict() -> None:
    assert credential_verdict(False, None, 1e12) == "valid"  # no expiry
    assert credential_verdict(False, 100.0, 99.9) == "valid"
    assert credential_verdict(False, 100.0, 100.0) == "expired"  # from its expiry on
    assert credential_verdict(True, 100.0, 200.0) == "revoked"  # revoked wins
