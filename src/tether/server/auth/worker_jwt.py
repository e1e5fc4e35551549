"""Worker tokens: HS256 JWTs signed with a key ring; the key id travels in ``kid``."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from tether.errors import AuthenticationFailed


@dataclass(frozen=True)
class WorkerClaims:
    session_body: str
    org_id: str
    environment_id: str | None
    epoch: int
    work_id: str | None
    jti: str
    exp: float
    raw: dict[str, Any]
    kid: str = ""  # the signing key (header): streams opened with the token close when it is retired


class KeyRing:
    def __init__(self, keys: dict[str, str], active_kid: str, issuer: str) -> None:
        if active_kid not in keys:
            raise ValueError("active key missing from the key ring")
        self.keys = keys
        self.active_kid = active_kid
        self.issuer = issuer
        self._verified: dict[str, WorkerClaims] = {}

    @staticmethod
    def new_key() -> tuple[str, str]:
        return "k" + secrets.token_hex(6), secrets.token_urlsafe(48)

    def mint(self, *, session_body: str, org_id: str, environment_id: str | None, epoch: int,
             work_id: str | None, now: float, ttl: float) -> tuple[str, WorkerClaims]:
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": session_body,
            "session_id": f"cse_{session_body}",
            "role": "worker",
            "org": org_id,
            "epoch": epoch,
            "jti": str(uuid.uuid4()),
            "iat": int(now),
            "exp": int(now + ttl),
        }
        if environment_id:
            claims["env"] = environment_id
        if work_id:
            claims["wid"] = work_id
        token = jwt.encode(claims, self.keys[self.active_kid], algorithm="HS256",
                           headers={"kid": self.active_kid})
        return token, _claims(claims, self.active_kid)

    def verify(self, token: str, *, now: float) -> WorkerClaims:
        """Verify signature, role and expiry. Verified tokens are remembered (bounded) because
        every worker write presents the same token and HMAC + JSON decoding show up in profiles."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.exp <= now:
                raise AuthenticationFailed("The worker token has expired.")
            return cached
        claims = self._verify(token, now=now)
        if len(self._verified) >= 10_000:
            self._verified.clear()
        self._verified[token] = claims
        return claims

    def _verify(self, token: str, *, now: float) -> WorkerClaims:
        if token.startswith("sk-ant-si-"):
            token = token[len("sk-ant-si-"):]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthenticationFailed("The worker token is malformed.") from None
        kid = str(header.get("kid", ""))
        key = self.keys.get(kid)
        if key is None:
            raise AuthenticationFailed("The worker token was signed by an unknown key.")
        try:
            claims = jwt.decode(token, key, algorithms=["HS256"], options={"require": ["exp", "sub", "role"],
                                "verify_exp": False})
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"The worker token is invalid: {exc}.") from None
        if claims.get("role") != "worker":
            raise AuthenticationFailed("The token is not a worker token.")
        if float(claims["exp"]) <= now:
            raise AuthenticationFailed("The worker token has expired.", error_type="authentication_error")
        return _claims(claims, kid)


def _claims(claims: dict[str, Any], kid: str) -> WorkerClaims:
    return WorkerClaims(
        session_body=str(claims["sub"]),
        org_id=str(claims.get("org", "")),
        environment_id=claims.get("env"),
        epoch=int(claims.get("epoch", 0)),
        work_id=claims.get("wid"),
        jti=str(claims.get("jti", "")),
        exp=float(claims["exp"]),
        raw=claims,
        kid=kid,
    )
