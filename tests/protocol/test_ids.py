from __future__ import annotations

import string

from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol import ids

BODY = st.text(alphabet="0123456789abcdefghjkmnpqrstvwxyz", min_size=26, max_size=26)
ID_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=0, max_size=40)


def test_new_body_is_deterministic_given_time_and_randomness() -> None:
    body = ids.new_body(now_ms=0, randomness=bytes(10))
    assert body == "0" * 26
    assert ids.new_body(now_ms=1, randomness=bytes(10)) == "0" * 9 + "1" + "0" * 16
    assert len(ids.new_body()) == 26


def test_new_body_sorts_by_time() -> None:
    a = ids.new_body(now_ms=1_700_000_000_000, randomness=b"\xff" * 10)
    b = ids.new_body(now_ms=1_700_000_000_001, randomness=bytes(10))
    assert a < b


def test_new_body_rejects_wrong_randomness_length() -> None:
    try:
        ids.new_body(now_ms=0, randomness=b"short")
    except ValueError:
        pass
    else:
        raise AssertionError("expected ValueError")


def test_new_id_has_prefix_and_valid_body() -> None:
    value = ids.new_id("env")
    assert value.startswith("env_")
    assert ids.prefixed_body(value, "env") == value[4:]
    assert ids.is_valid_id(value)


def test_is_valid_id() -> None:
    assert ids.is_valid_id("work_abc-DEF_123")
    assert not ids.is_valid_id("")
    assert not ids.is_valid_id("a/b")
    assert not ids.is_valid_id("a b")
    assert not ids.is_valid_id("x" * 257)
    assert not ids.is_valid_id(123)
    assert not ids.is_valid_id(None)


def test_costumes() -> None:
    body = ids.new_body(now_ms=5, randomness=bytes(range(10)))
    compat, infra = f"session_{body}", f"cse_{body}"
    assert ids.to_compat_session_id(infra) == compat
    assert ids.to_infra_session_id(compat) == infra
    assert ids.to_compat_session_id(compat) == compat
    assert ids.to_infra_session_id(infra) == infra
    assert ids.to_compat_session_id("env_x") == "env_x"
    assert ids.session_body(compat) == ids.session_body(infra) == body
    assert ids.session_body("session_NOTAULID") is None
    assert ids.session_body("env_" + body) is None
    assert ids.prefixed_body("env_" + body, "env") == body
    assert ids.prefixed_body("env_" + body, "work") is None
    assert ids.prefixed_body("env_short", "env") is None


def test_same_session_id_reference_rules() -> None:
    assert ids.same_session_id("session_abcd", "cse_abcd")
    assert ids.same_session_id("session_staging_abcd", "cse_abcd")
    assert ids.same_session_id("x", "x")
    assert not ids.same_session_id("session_abc", "cse_abc")  # bodies shorter than 4
    assert not ids.same_session_id("session_abcd", "cse_abce")
    assert ids.id_body("no-underscore") == "no-underscore"


@settings(deadline=None)
@given(BODY)
def test_costume_round_trip(body: str) -> None:
    compat = f"session_{body}"
    infra = ids.to_infra_session_id(compat)
    assert infra == f"cse_{body}"
    assert ids.to_compat_session_id(infra) == compat
    assert ids.same_session_id(compat, infra)
    assert ids.session_body(infra) == body
    assert ids.is_valid_id(compat) and ids.is_valid_id(infra)


@settings(deadline=None)
@given(ID_TEXT, ID_TEXT)
def test_same_session_id_is_symmetric_and_reflexive(a: str, b: str) -> None:
    assert ids.same_session_id(a, b) == ids.same_session_id(b, a)
    assert ids.same_session_id(a, a)


@settings(deadline=None)
@given(st.integers(min_value=0, max_value=(1 << 48) - 1), st.binary(min_size=10, max_size=10))
def test_new_body_shape(ms: int, rand: bytes) -> None:
    body = ids.new_body(now_ms=ms, randomness=rand)
    assert ids.session_body("cse_" + body) == body
