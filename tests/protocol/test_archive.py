"""Why a session ended (docs/protocol.md §4.2): the reasons a client may give, and which endings
a new session in the same place continues."""

from __future__ import annotations

from typing import get_args

from tether.protocol.archive import ARCHIVE_REASONS, SUCCEEDED_ON_RESTART, ArchiveReason


def test_the_reason_list_is_exactly_the_type() -> None:
    assert ARCHIVE_REASONS == get_args(ArchiveReason)
    assert len(set(ARCHIVE_REASONS)) == len(ARCHIVE_REASONS)


def test_only_a_replaced_or_failed_bridge_has_a_successor() -> None:
    assert SUCCEEDED_ON_RESTART == {"replaced", "bridge_failed"}
    assert SUCCEEDED_ON_RESTART <= set(ARCHIVE_REASONS)
    # a person's archive or an agent that finished is an ending, not an interruption
    assert not {"user", "session_ended"} & SUCCEEDED_ON_RESTART
