"""The REPL bridge's timing knobs (TETHER_REPL_BRIDGE_JSON) and the dead-token record file."""

from __future__ import annotations

import pathlib

import pytest

from tether.bridge.repl import ReplBridgeConfig
from tether.bridge.repl.controller import load_dead_token, save_dead_token
from tether.protocol.repl_config import DeadToken


def test_knobs_from_the_environment() -> None:
    assert ReplBridgeConfig.from_env({}) == ReplBridgeConfig()
    cfg = ReplBridgeConfig.from_env({"TETHER_REPL_BRIDGE_JSON": '{"ws_sleep_threshold_s": 3, "oversleep_s": 2.5}'})
    assert (cfg.ws_sleep_threshold_s, cfg.oversleep_s, cfg.ws_ping_s) == (3.0, 2.5, 10.0)
    for bad, words in (("{", "not JSON"), ("[1]", "JSON object"), ('{"nope": 1}', "unknown field 'nope'"),
                       ('{"ws_ping_s": 0}', "ws_ping_s must be a positive number"),
                       ('{"ws_ping_s": true}', "ws_ping_s must be a positive number")):
        with pytest.raises(ValueError, match=words):
            ReplBridgeConfig.from_env({"TETHER_REPL_BRIDGE_JSON": bad})


def test_dead_token_record(tmp_path: pathlib.Path) -> None:
    assert load_dead_token(tmp_path) is None
    save_dead_token(tmp_path, DeadToken(123.0, 2))
    assert load_dead_token(tmp_path) == DeadToken(123.0, 2)
    (tmp_path / "repl-bridge.json").write_text("not json")
    assert load_dead_token(tmp_path) is None
