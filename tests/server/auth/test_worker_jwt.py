"""Worker JWTs: claims, key rotation by kid, and every way a token can be wrong."""

from __future__ import annotations

import jwt
import pytest

from tether.errors import AuthenticationFailed
from tether.server.auth.worker_jwt import KeyRing


def ring() -> KeyRing:
    return KeyRing({"k1": "a" * 48, "k2": "b" * 48}, "k2", "http://tether.test")


def test_claims_follow_the_protocol() -> None:
    token, claims = ring().mint(session_body="01abc", org_id="org_1", environment_id="env_1", epoch=3,
                                work_id="work_1", now=1000.0, ttl=60)
    raw = jwt.decode(token, options={"verify_signature": False})
    assert raw["sub"] == "01abc" and raw["session_id"] == "cse_01abc" and raw["role"] == "worker"
    assert raw["org"] == "org_1" and raw["env"] == "env_1" and raw["epoch"] == 3
    assert raw["iss"] == "http://tether.test" and raw["exp"] == 1060 and raw["jti"]
    assert jwt.get_unverified_header(token)["kid"] == "k2"
    assert claims.work_id == "work_1"


def test_old_keys_keep_verifying_after_rotation() -> None:
    old = KeyRing({"k1": "a" * 48}, "k1", "x")
    token, _ = old.mint(session_body="s", org_id="o", environment_id=None, epoch=0, work_id=None, now=0, ttl=100)
    assert ring().verify(token, now=50).session_body == "s"
    assert ring().verify("sk-ant-si-" + token, now=50).session_body == "s"


@pytest.mark.parametrize("case", ["expired", "unknown_kid", "forged", "not_worker", "garbage"])
def test_bad_tokens_are_rejected(case: str) -> None:
    r = ring()
    token, _ = r.mint(session_body="s", org_id="o", environment_id=None, epoch=0, work_id=None, now=0, ttl=10)
    if case == "expired":
        now = 11.0
    else:
        now = 5.0
        if case == "unknown_kid":
            token = jwt.encode({"sub": "s", "role": "worker", "exp": 100}, "c" * 48, headers={"kid": "zz"})
        elif case == "forged":
            token = jwt.encode({"sub": "s", "role": "worker", "exp": 100}, "c" * 48, headers={"kid": "k2"})
        elif case == "not_worker":
            token = jwt.encode({"sub": "s", "role": "user", "exp": 100}, "b" * 48, headers={"kid": "k2"})
        else:
            token = "not.a.jwt"
    with pytest.raises(AuthenticationFailed):
        r.verify(token, now=now)
