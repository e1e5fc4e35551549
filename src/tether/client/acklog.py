"""An opt-in record of the worker events the server acknowledged, for audits (``bench/chaos.py``).

With ``TETHER_ACK_LOG=<path>`` in a worker process's environment (the bridge, ``tether agent
--sdk-url``), both transports append one JSON line per *stored* event that the server answered
2xx: ``{"s": <session id as the transport names it>, "u": <uuid>, "t": <type>}``, plus ``"r": <request
id>`` on a ``control_response`` (the server consumes a worker's answer to its own ``initialize``
without storing it, docs/protocol.md §4.4: the audit tells those apart by the request id). Ephemeral
events (``stream_event``, v2 ``ephemeral``) are not stored by the server, so they are not
recorded. An audit then checks that every recorded uuid is in the session's log exactly once.

Off by default: without the variable the transports pay one ``None`` check per answered batch.
Each answered batch is one ``os.write`` on a file opened with ``O_APPEND``, so lines written
before the process is killed (SIGKILL included) are on disk. Failures to write are logged once
and turn the record off: an audit aid never breaks a worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any, Final

import orjson

from tether.protocol.messages import CONTROL_RESPONSE, response_request_id

__all__ = [
    "ENV_VAR",
    "AckLog",
    "from_env",
]

log = logging.getLogger("tether.client.acklog")

ENV_VAR: Final = "TETHER_ACK_LOG"


class AckLog:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def record(self, session_id: str, messages: Iterable[Mapping[str, Any]]) -> None:
        """``messages`` (the stored ones: the caller leaves out what was sent ephemeral) were
        acknowledged (2xx) by the server for ``session_id``."""
        if self._fd is None:
            return
        lines = b"".join(orjson.dumps(_row(session_id, m)) + b"\n" for m in messages)
        if not lines:
            return
        try:
            os.write(self._fd, lines)
        except OSError as exc:
            log.warning("the ack log %s cannot be written (%s); no longer recording", self.path, exc)
            self._fd = None


def _row(session_id: str, message: Mapping[str, Any]) -> dict[str, Any]:
    row = {"s": session_id, "u": message.get("uuid"), "t": message.get("type")}
    if row["t"] == CONTROL_RESPONSE:
        row["r"] = response_request_id(message)
    return row


_from_env: AckLog | None = None
_checked = False


def from_env() -> AckLog | None:
    """The process's ack log when ``TETHER_ACK_LOG`` is set (opened once), else None."""
    global _from_env, _checked
    if not _checked:
        _checked = True
        path = os.environ.get(ENV_VAR)
        if path:
            try:
                _from_env = AckLog(path)
            except OSError as exc:
                log.warning("cannot open the ack log %s (%s); not recording", path, exc)
    return _from_env
