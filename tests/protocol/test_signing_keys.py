"""What an instance does with a fresh read of the signing keys (tether.protocol.signing_keys)."""

from __future__ import annotations

import pytest

from tether.protocol.signing_keys import KeyChanges, active_kid, key_changes


def test_the_newest_active_key_signs() -> None:
    assert active_kid([("k1", False), ("k2", True), ("k3", False)]) == "k2"
    assert active_kid([("k1", True), ("k2", True)]) == "k2"


def test_without_an_active_key_the_newest_signs() -> None:
    assert active_kid([("k1", False), ("k2", False)]) == "k2"


def test_no_keys_at_all_is_an_error() -> None:
    with pytest.raises(ValueError, match="no signing keys"):
        active_kid([])


def test_the_same_keys_are_no_change() -> None:
    changes = key_changes({"k1": "s1"}, "k1", {"k1": "s1"}, "k1")
    assert changes == KeyChanges(frozenset(), frozenset(), False) and not changes.any


def test_a_rotation_adds_a_key_and_moves_the_active_one() -> None:
    changes = key_changes({"k1": "s1"}, "k1", {"k1": "s1", "k2": "s2"}, "k2")
    assert changes.added == {"k2"} and not changes.retired and changes.active_changed and changes.any


def test_a_retired_key_is_one_gone_from_the_table() -> None:
    changes = key_changes({"k1": "s1", "k2": "s2"}, "k2", {"k2": "s2"}, "k2")
    assert changes.retired == {"k1"} and not changes.added and not changes.active_changed and changes.any


def test_a_kid_whose_secret_changed_is_retired_and_added() -> None:
    changes = key_changes({"k1": "s1"}, "k1", {"k1": "other"}, "k1")
    assert changes.retired == {"k1"} and changes.added == {"k1"}
