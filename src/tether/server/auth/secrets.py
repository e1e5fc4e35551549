"""Token generation and hashing. Secrets are stored only as hashes."""

from __future__ import annotations

import hashlib
import hmac
import secrets

# A credential's prefix says its kind, so a wrong kind is rejected before any lookup.
PREFIX = {
    "access": "tat_",
    "refresh": "trt_",
    "personal": "tpt_",
    "environment": "tes_",
    "login_link": "tll_",
    "web_session": "tws_",
    "device_code": "tdc_",
}
KIND_OF_PREFIX = {v: k for k, v in PREFIX.items()}


def new_secret(kind: str) -> str:
    return PREFIX[kind] + secrets.token_urlsafe(32)


def kind_of(token: str) -> str | None:
    if token.count(".") == 2:
        return "jwt"
    return KIND_OF_PREFIX.get(token[:4])


def hash_secret(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    try:
        _, salt_hex, digest_hex = stored.split("$")
        salt = bytes.fromhex(salt_hex)
    except ValueError:
        return False
    candidate = hash_password(password, salt=salt).split("$")[2]
    return hmac.compare_digest(candidate, digest_hex)


def user_code() -> str:
    """A device-flow user code: 8 letters without look-alikes, shown as XXXX-XXXX."""
    alphabet = "BCDFGHJKLMNPQRSTVWXZ"
    raw = "".join(secrets.choice(alphabet) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def csrf_token(session_secret: str, key: str) -> str:
    return hmac.new(key.encode(), session_secret.encode(), hashlib.sha256).hexdigest()[:32]
