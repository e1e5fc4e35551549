"""What the bridge tells its user when the poll is refused for good (docs/protocol.md §4.1, §11.8)."""

from __future__ import annotations

from tether.bridge.intake import fatal_poll_message
from tether.errors import BridgeFatalError


def test_a_replaced_environment_secret_does_not_send_the_user_to_log_in() -> None:
    exc = BridgeFatalError("Authentication failed (bad secret). Run `tether login` to log in again.", status=401)
    text = fatal_poll_message(exc, "env_1")
    assert "registered again by another bridge" in text and "env_1" in text
    assert "tether login" not in text and "start the bridge again" in text


def test_a_gone_environment_says_to_start_again() -> None:
    text = fatal_poll_message(BridgeFatalError("environment not found", status=404), "env_1")
    assert "gone (environment not found)" in text and "tether remote-control" in text


def test_other_refusals_pass_the_servers_words_through() -> None:
    assert fatal_poll_message(BridgeFatalError("forbidden here", status=403), None) == "forbidden here"
