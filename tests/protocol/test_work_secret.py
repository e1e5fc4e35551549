from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tether.protocol.work_secret import WorkSecret, WorkSecretError, decode_work_secret, encode_work_secret


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def test_round_trip_keeps_fields_and_extras() -> None:
    secret = WorkSecret(
        session_ingress_token="sk-ant-si-abc.def.ghi",
        api_base_url="https://tether.example",
        use_code_sessions=True,
        sources=[{"type": "git_repository"}],
        auth=[{"type": "oauth", "token": "t"}],
        extra={"claude_code_args": None, "environment_variables": {"A": "1"}},
    )
    text = encode_work_secret(secret)
    assert "=" not in text and "+" not in text and "/" not in text
    assert decode_work_secret(text) == secret


def test_extra_cannot_override_known_fields() -> None:
    secret = WorkSecret("tok", "https://x", extra={"version": 7, "session_ingress_token": "evil"})
    decoded = decode_work_secret(encode_work_secret(secret))
    assert decoded.session_ingress_token == "tok"
    assert decoded.version == 1


def test_padded_input_is_accepted() -> None:
    raw = base64.urlsafe_b64encode(
        json.dumps({"version": 1, "session_ingress_token": "t", "api_base_url": ""}).encode()
    )
    assert decode_work_secret(raw.decode()).session_ingress_token == "t"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("%%%", "not base64url JSON"),
        (_b64([1, 2]), "not a JSON object"),
        (
            _b64({"version": 2, "session_ingress_token": "t", "api_base_url": ""}),
            "Unsupported work secret version",
        ),
        (_b64({"version": True, "session_ingress_token": "t", "api_base_url": ""}), "Unsupported"),
        (_b64({"session_ingress_token": "t", "api_base_url": ""}), "Unsupported"),
        (_b64({"version": 1, "session_ingress_token": "", "api_base_url": ""}), "session_ingress_token"),
        (_b64({"version": 1, "session_ingress_token": 5, "api_base_url": ""}), "session_ingress_token"),
        (_b64({"version": 1, "session_ingress_token": "t"}), "api_base_url"),
        (_b64({"version": 1, "session_ingress_token": "t", "api_base_url": None}), "api_base_url"),
        (base64.urlsafe_b64encode(b"\xff\xfe{}").decode(), "not base64url JSON"),
    ],
)
def test_invalid_secrets_are_rejected_with_reason(text: str, reason: str) -> None:
    with pytest.raises(WorkSecretError, match=reason):
        decode_work_secret(text)


def test_use_code_sessions_must_be_literally_true() -> None:
    base = {"version": 1, "session_ingress_token": "t", "api_base_url": ""}
    assert decode_work_secret(_b64({**base, "use_code_sessions": True})).use_code_sessions is True
    assert decode_work_secret(_b64({**base, "use_code_sessions": "false"})).use_code_sessions is False
    assert decode_work_secret(_b64({**base, "use_code_sessions": 1})).use_code_sessions is False
    assert decode_work_secret(_b64(base)).use_code_sessions is False


def test_malformed_sources_and_auth_become_empty() -> None:
    decoded = decode_work_secret(
        _b64({"version": 1, "session_ingress_token": "t", "api_base_url": "", "sources": "x", "auth": {}})
    )
    assert decoded.sources == [] and decoded.auth == []


@settings(deadline=None)
@given(token=st.text(min_size=1), base=st.text(), v2=st.booleans())
def test_round_trip_any_token(token: str, base: str, v2: bool) -> None:
    secret = WorkSecret(session_ingress_token=token, api_base_url=base, use_code_sessions=v2)
    text = encode_work_secret(secret)
    assert text.isascii()
    assert decode_work_secret(text) == secret
