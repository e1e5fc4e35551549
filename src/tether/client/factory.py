"""Choose a session's worker transport from its work secret (docs/protocol.md §9.1, §11.2).

``use_code_sessions`` absent/false → session-ingress v1 (:class:`~tether.client.hybrid.HybridTransport`);
true → CCR v2 (:class:`~tether.client.v2.V2Transport`: SSE reads + ``CCRClient`` writes at
``{base_url}/v1/code/sessions/cse_…``), after registering the worker (``POST …/worker/register``)
for its epoch. The bridge always calls :func:`make_transport`, so it never knows which one it has.
"""

from __future__ import annotations

from typing import Any

from tether.client.hybrid import HybridConfig, HybridTransport
from tether.client.transport import SessionTransport
from tether.client.v2 import V2Config, V2Transport, WorkerRegistrationFailed, register_worker
from tether.errors import TetherError
from tether.protocol.ids import is_valid_id, to_infra_session_id
from tether.protocol.work_secret import WorkSecret

__all__ = [
    "TransportUnavailable",
    "code_session_url",
    "make_transport",
]


class TransportUnavailable(TetherError):
    """No transport can serve this work item (e.g. the v2 worker registration failed)."""

    status = 501
    error_type = "transport_unavailable"


def code_session_url(base_url: str, session_id: str) -> str:
    """``{base_url}/v1/code/sessions/cse_…`` for a session id in either costume."""
    if not is_valid_id(session_id):
        raise ValueError(f"invalid session id {session_id!r}")
    return f"{base_url.rstrip('/')}/v1/code/sessions/{to_infra_session_id(session_id)}"


async def make_transport(secret: WorkSecret, *, base_url: str, session_id: str,
                         hybrid_config: HybridConfig | None = None, v2_config: V2Config | None = None,
                         from_sequence_num: int | None = None, epoch: int | None = None,
                         **options: Any) -> SessionTransport:
    """A transport for ``session_id`` on the server at ``base_url`` (the bridge's own base URL,
    not the secret's ``api_base_url``, which may point at a proxy tunnel — docs/protocol.md §9.1).

    ``options`` are passed to the transport (``clock``, ``rnd`` …). Async because a v2
    transport registers its worker (``POST …/worker/register``) before it can be used; pass
    ``epoch`` to skip that (``/bridge`` already bumped it) and ``from_sequence_num`` to resume
    the read stream where an earlier v2 transport of the session stopped. A registration that
    fails raises :class:`TransportUnavailable`.
    """
    token = secret.session_ingress_token
    if not secret.use_code_sessions:
        return HybridTransport(base_url, session_id, token, config=hybrid_config, **options)
    cfg = v2_config or V2Config()
    url = code_session_url(base_url, session_id)
    if epoch is None:
        try:
            epoch = await register_worker(url, token, attempts=cfg.register_attempts,
                                          retry_delay=cfg.register_retry_delay, timeout=cfg.register_timeout)
        except WorkerRegistrationFailed as exc:
            raise TransportUnavailable(f"cannot register as the v2 worker of {session_id}: {exc}") from None
    return V2Transport(url, token, epoch=epoch, from_sequence_num=from_sequence_num, config=cfg, **options)
