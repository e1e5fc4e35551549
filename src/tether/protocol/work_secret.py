"""The work secret of a work item (docs/protocol.md §9.1): base64url(JSON)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "WorkSecret",
    "WorkSecretError",
    "decode_work_secret",
    "encode_work_secret",
]


class WorkSecretError(ValueError):
    """The secret cannot be decoded or does not validate."""


@dataclass(frozen=True)
class WorkSecret:
    session_ingress_token: str
    api_base_url: str
    version: int = 1
    use_code_sessions: bool = False
    sources: list[dict[str, Any]] = field(default_factory=list)
    auth: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = dict(self.extra)
        body.update(
            version=self.version,
            session_ingress_token=self.session_ingress_token,
            api_base_url=self.api_base_url,
            sources=self.sources,
            auth=self.auth,
            use_code_sessions=self.use_code_sessions,
        )
        return body


def encode_work_secret(secret: WorkSecret) -> str:
    raw = json.dumps(secret.to_json(), separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_work_secret(text: str) -> WorkSecret:
    """Decode and validate; raise :class:`WorkSecretError` with the reason."""
    if not isinstance(text, str) or not text:
        raise WorkSecretError("work secret is empty")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw.decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise WorkSecretError(f"work secret is not base64url JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WorkSecretError("work secret is not a JSON object")
    version = data.get("version")
    if isinstance(version, bool) or version != 1:  # True == 1 in Python, not in JSON
        raise WorkSecretError(f"Unsupported work secret version: {version!r}")
    token = data.get("session_ingress_token")
    if not isinstance(token, str) or not token:
        raise WorkSecretError("work secret has no session_ingress_token")
    base = data.get("api_base_url")
    if not isinstance(base, str):
        raise WorkSecretError("work secret has no api_base_url")
    known = {"version", "session_ingress_token", "api_base_url", "use_code_sessions", "sources", "auth"}
    sources = data.get("sources")
    auth = data.get("auth")
    return WorkSecret(
        session_ingress_token=token,
        api_base_url=base,
        use_code_sessions=data.get("use_code_sessions") is True,  # reference: `=== true`
        sources=sources if isinstance(sources, list) else [],
        auth=auth if isinstance(auth, list) else [],
        extra={k: v for k, v in data.items() if k not in known},
    )
