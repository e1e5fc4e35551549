"""CCR v2 worker decisions: what a ``/worker/*`` answer means, heartbeat timing, the coalescing
worker-state queue, delivery acks and the worker status a session's traffic implies
(docs/protocol.md §3.5, §8.5, §10, §9.4, §12.3 item 9, §5, §4.4–§4.5).

Sans-I/O: nothing here reads a clock, a socket or a global random generator. The adapter
(:mod:`tether.client.ccr`, :mod:`tether.client.v2`) owns the HTTP client and the timers and
asks these classes what to do.

Answer handling (:class:`RequestHealth`, after the stock CLI's ``CCRClient.request``):

* 2xx — done; the auth-failure and not-found streaks end;
* 409 — a newer worker epoch superseded ours: stop (synthetic close 4090); but 409
  ``already_archived`` means the session was archived: stop as gone (4001, as the v1 socket);
* 401/403 — if the token has already expired, stop at once; else count, and stop after
  10 consecutive ones (the token is not coming back);
* 404 — counted; 3 in a row mean the session is gone: stop;
* 400/413/422 — this request can never succeed: drop it (retrying would wedge the serial
  uploader behind it);
* anything else (429 with ``Retry-After``, 5xx, no answer) — retry 500 ms → 30 s + ≤500 ms.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import deque
from collections.abc import Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit, urlunsplit

from tether.protocol.backoff import RandomSource
from tether.protocol.ids import is_valid_id
from tether.protocol.messages import (
    CAN_USE_TOOL,
    CONTROL_CANCEL_REQUEST,
    CONTROL_REQUEST,
    CONTROL_RESPONSE,
    RESULT,
    STREAM_EVENT,
    SYSTEM,
    USER,
    control_subtype,
    request_id_of,
    request_payload,
    response_request_id,
)
from tether.protocol.uuid_ring import BoundedUUIDSet

__all__ = [
    "ARCHIVED_ERROR",
    "CLOSE_EPOCH_SUPERSEDED",
    "CLOSE_INIT_FAILED",
    "CLOSE_SESSION_GONE",
    "CLOSE_SSE_GAVE_UP",
    "CLOSE_UNAUTHORIZED",
    "DROPPED_STATUSES",
    "EXPIRY_SKEW_S",
    "HEARTBEAT_INTERVAL",
    "HEARTBEAT_JITTER",
    "MAX_AUTH_FAILURES",
    "MAX_DELIVERY_BATCH",
    "MAX_EVENTS_PER_POST",
    "MAX_NOT_FOUND",
    "MAX_POST_BYTES",
    "STOPPING_VERDICTS",
    "STREAM_EVENT_WINDOW",
    "WORKER_STATUSES",
    "Ack",
    "DeliveryQueue",
    "DeliveryStatus",
    "DeliveryTracker",
    "RequestHealth",
    "StatusReport",
    "Verdict",
    "WorkerStateQueue",
    "WorkerStatusTracker",
    "api_base_of_session_url",
    "awaiting_fresh_token",
    "event_envelope",
    "heartbeat_delay",
    "is_ephemeral_event",
    "merge_patches",
    "session_id_of_url",
    "session_url_from_sdk_url",
    "stop_code",
    "token_expiry",
]

# Synthetic close codes of the v2 transport (docs/protocol.md §8.5).
CLOSE_EPOCH_SUPERSEDED: Final = 4090
ARCHIVED_ERROR: Final = "already_archived"
"""The 409 error type of a write to an archived session (docs/protocol.md §4.2)."""
CLOSE_INIT_FAILED: Final = 4091
CLOSE_SSE_GAVE_UP: Final = 4092
CLOSE_SESSION_GONE: Final = 4001
CLOSE_UNAUTHORIZED: Final = 4003

HEARTBEAT_INTERVAL: Final = 20.0
HEARTBEAT_JITTER: Final = 0.1
STREAM_EVENT_WINDOW: Final = 0.1
MAX_EVENTS_PER_POST: Final = 100
MAX_POST_BYTES: Final = 10 << 20
MAX_DELIVERY_BATCH: Final = 64
MAX_AUTH_FAILURES: Final = 10
MAX_NOT_FOUND: Final = 3
DROPPED_STATUSES: Final[frozenset[int]] = frozenset({400, 413, 422})

WORKER_STATUSES: Final[frozenset[str]] = frozenset({"idle", "running", "requires_action"})
DeliveryStatus = Literal["received", "processing", "processed"]


# --- URLs ----------------------------------------------------------------------------


def session_url_from_sdk_url(url: str) -> str:
    """The worker session URL (``/worker/*`` hang below it) for an ``--sdk-url``.

    ``https://host/v1/code/sessions/cse_…`` is used as it is; ``wss://host/v1/session_ingress/ws/<id>``
    becomes ``https://…`` with the same path (what the stock CLI does in v2 mode); a trailing
    ``/worker/events/stream`` or ``/`` is dropped. Raises ``ValueError`` for other schemes or a
    last path segment that is not an id.
    """
    parts = urlsplit(url)
    schemes = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
    if parts.scheme not in schemes or not parts.netloc:
        raise ValueError(f"the session URL must be http(s):// or ws(s)://, got {url!r}")
    path = parts.path.rstrip("/")
    path = path.removesuffix("/worker/events/stream").rstrip("/")
    if not is_valid_id(path.rsplit("/", 1)[-1]):
        raise ValueError(f"the session URL does not end in a session id: {url!r}")
    return urlunsplit((schemes[parts.scheme], parts.netloc, path, "", ""))


def api_base_of_session_url(session_url: str) -> str:
    """The server's base URL above a worker session URL (``…/v1/code/sessions/<id>`` or
    ``…/v1|v2/session_ingress/ws/<id>``): where its other routes (file downloads) live."""
    parts = urlsplit(session_url)
    path = parts.path.rstrip("/")
    for marker in ("/v1/code/sessions/", "/v1/session_ingress/ws/", "/v2/session_ingress/ws/"):
        head, found, _ = path.rpartition(marker)
        if found:
            path = head
            break
    else:
        path = path.rsplit("/", 1)[0]
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def session_id_of_url(session_url: str) -> str:
    """The last path segment of a session URL (what heartbeats report as ``session_id``)."""
    return urlsplit(session_url).path.rstrip("/").rsplit("/", 1)[-1]


# --- tokens --------------------------------------------------------------------------


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (Unix seconds) of a JWT, unverified (docs/protocol.md §9.2); None when the
    token is opaque or has none. An ``sk-ant-si-`` prefix is ignored."""
    body = token.removeprefix("sk-ant-si-")
    pieces = body.split(".")
    if len(pieces) != 3:
        return None
    try:
        raw = base64.urlsafe_b64decode(pieces[1] + "=" * (-len(pieces[1]) % 4))
        claims = json.loads(raw)
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    return float(exp)


EXPIRY_SKEW_S: Final = 5.0  # a token this close to its ``exp`` counts as expired (the server's clock may be ahead)


def awaiting_fresh_token(token: str, now: float, grace_s: float) -> bool:
    """True while ``token`` has expired (``now`` is wall-clock seconds) less than ``grace_s``
    seconds ago. A worker whose owner rotates its token (the standalone bridge, docs/protocol.md
    §9.3) treats an auth refusal then as a wait for the fresh token, not as the end of the
    session; ``grace_s`` 0 (a worker nobody refreshes) never waits."""
    if grace_s <= 0:
        return False
    exp = token_expiry(token)
    return exp is not None and exp - EXPIRY_SKEW_S <= now < exp + grace_s


# --- answers -------------------------------------------------------------------------

Verdict = Literal["ok", "retry", "drop", "superseded", "unauthorized", "gone"]
STOPPING_VERDICTS: Final[frozenset[str]] = frozenset({"superseded", "unauthorized", "gone"})


def stop_code(verdict: Verdict) -> int:
    """The synthetic close code a stopping verdict ends the transport with."""
    return {"superseded": CLOSE_EPOCH_SUPERSEDED, "unauthorized": CLOSE_UNAUTHORIZED,
            "gone": CLOSE_SESSION_GONE}[verdict]


class RequestHealth:
    """Streaks of auth failures and 404s across every ``/worker/*`` request of one worker."""

    __slots__ = ("auth_failures", "max_auth_failures", "max_not_found", "not_found")

    def __init__(self, max_auth_failures: int = MAX_AUTH_FAILURES, max_not_found: int = MAX_NOT_FOUND) -> None:
        if max_auth_failures < 1 or max_not_found < 1:
            raise ValueError("the failure limits must be at least 1")
        self.max_auth_failures = max_auth_failures
        self.max_not_found = max_not_found
        self.auth_failures = 0
        self.not_found = 0

    def observe(self, status: int | None, *, token_expired: bool = False,
                awaiting_token: bool = False, error_type: str | None = None) -> Verdict:
        """Classify one answer (``None``: no answer at all). ``awaiting_token``: the token
        expired and its owner is expected to hand over a fresh one (:func:`awaiting_fresh_token`),
        so an auth refusal is retried without counting towards the streak. ``error_type``: the
        error body's ``error.type``, when there is one."""
        if status is None:
            return "retry"
        if 200 <= status < 300:
            self.auth_failures = 0
            self.not_found = 0
            return "ok"
        if status == 409:  # an archived session is gone, not taken over by a newer worker
            return "gone" if error_type == ARCHIVED_ERROR else "superseded"
        if status == 410:  # the token's work item was stopped (docs/protocol.md §4.4): stop now
            return "gone"
        if status in (401, 403):
            if awaiting_token:
                return "retry"
            if token_expired:
                return "unauthorized"
            self.auth_failures += 1
            return "unauthorized" if self.auth_failures >= self.max_auth_failures else "retry"
        if status == 404:
            self.not_found += 1
            return "gone" if self.not_found >= self.max_not_found else "retry"
        if status in DROPPED_STATUSES:
            return "drop"
        return "retry"


def heartbeat_delay(interval: float, jitter_fraction: float, rnd: RandomSource) -> float:
    """``interval`` ± ``jitter_fraction`` (20 s ± 10 %)."""
    if interval <= 0 or not 0 <= jitter_fraction < 1:
        raise ValueError("need interval > 0 and 0 <= jitter_fraction < 1")
    r = rnd if isinstance(rnd, float | int) else rnd.random()
    return float(interval * (1 + jitter_fraction * (2 * float(r) - 1)))


# --- client events -------------------------------------------------------------------


def is_ephemeral_event(message: Mapping[str, Any]) -> bool:
    """Sent with ``ephemeral: true`` (fanned out, never stored): ``stream_event`` and the
    ``system/thinking_tokens`` progress lines, as the stock CLI marks them."""
    kind = message.get("type")
    return kind == STREAM_EVENT or (kind == SYSTEM and message.get("subtype") == "thinking_tokens")


def event_envelope(message: dict[str, Any]) -> dict[str, Any]:
    """One entry of ``POST /worker/events`` (the message must already carry its ``uuid``)."""
    if is_ephemeral_event(message):
        return {"payload": message, "ephemeral": True}
    return {"payload": message}


# --- the worker-state queue -----------------------------------------------------------

_MERGED_KEYS: Final = ("external_metadata", "internal_metadata")


def merge_patches(older: Mapping[str, Any], newer: Mapping[str, Any]) -> dict[str, Any]:
    """Combine two ``PUT /worker`` bodies: top-level keys last-write-wins; the metadata
    objects merge one level deep, keeping ``null`` (it still has to delete on the server)."""
    out = dict(older)
    for key, value in newer.items():
        prior = out.get(key)
        if key in _MERGED_KEYS and isinstance(prior, dict) and isinstance(value, dict):
            out[key] = {**prior, **value}
        else:
            out[key] = value
    return out


class WorkerStateQueue:
    """The coalescing ``PUT /worker`` uploader's bookkeeping: one patch in flight, one pending.

    :meth:`take` hands out the pending patch (only while nothing is in flight);
    :meth:`succeeded` / :meth:`dropped` end the in-flight one; :meth:`failed` returns the patch
    to resend: the failed one with everything reported since merged over it. A status equal to
    the last one reported (same details) is suppressed.
    """

    __slots__ = ("_in_flight", "_last_state", "_pending")

    def __init__(self) -> None:
        self._in_flight: dict[str, Any] | None = None
        self._pending: dict[str, Any] | None = None
        self._last_state: tuple[str, str] | None = None

    @property
    def idle(self) -> bool:
        return self._in_flight is None and self._pending is None

    @property
    def in_flight(self) -> dict[str, Any] | None:
        return self._in_flight

    @property
    def pending(self) -> dict[str, Any] | None:
        return self._pending

    def put(self, patch: Mapping[str, Any]) -> None:
        self._pending = merge_patches(self._pending or {}, patch)

    def report_state(self, status: str, details: Mapping[str, Any] | None = None) -> bool:
        """Queue a ``worker_status`` change; False when it repeats the last one reported."""
        if status not in WORKER_STATUSES:
            raise ValueError(f"worker_status must be one of {sorted(WORKER_STATUSES)}, got {status!r}")
        key = (status, json.dumps(details, sort_keys=True, default=str))
        if key == self._last_state:
            return False
        self._last_state = key
        self.put({"worker_status": status, "requires_action_details": dict(details) if details else None})
        return True

    def report_metadata(self, *, external: Mapping[str, Any] | None = None,
                        internal: Mapping[str, Any] | None = None) -> None:
        patch: dict[str, Any] = {}
        if external:
            patch["external_metadata"] = dict(external)
        if internal:
            patch["internal_metadata"] = dict(internal)
        if patch:
            self.put(patch)

    def take(self) -> dict[str, Any] | None:
        if self._in_flight is not None or self._pending is None:
            return None
        self._in_flight, self._pending = self._pending, None
        return self._in_flight

    def succeeded(self) -> None:
        self._in_flight = None

    dropped = succeeded

    def failed(self) -> dict[str, Any]:
        """The in-flight patch failed: resend it with whatever was reported since merged over it."""
        if self._in_flight is None:
            raise RuntimeError("no patch in flight")
        if self._pending is not None:
            self._in_flight = merge_patches(self._in_flight, self._pending)
            self._pending = None
        return self._in_flight


# --- delivery acks -------------------------------------------------------------------


class DeliveryQueue:
    """``POST /worker/events/delivery`` updates waiting to go, oldest first, batches ≤ 64.

    An update already waiting is not queued twice. When ``capacity`` is reached the oldest
    update is dropped (acks are advice to the server; a lost one only means a re-delivery,
    which workers deduplicate).
    """

    __slots__ = ("_capacity", "_items", "_keys", "dropped")

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._items: deque[tuple[str, str]] = deque()
        self._keys: set[tuple[str, str]] = set()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, event_id: str, status: DeliveryStatus) -> bool:
        key = (event_id, status)
        if key in self._keys:
            return False
        if len(self._items) >= self._capacity:
            self._keys.discard(self._items.popleft())
            self.dropped += 1
        self._items.append(key)
        self._keys.add(key)
        return True

    def take(self, limit: int = MAX_DELIVERY_BATCH) -> list[dict[str, str]]:
        batch: list[dict[str, str]] = []
        while self._items and len(batch) < limit:
            event_id, status = self._items.popleft()
            self._keys.discard((event_id, status))
            batch.append({"event_id": event_id, "status": status})
        return batch

    def put_back(self, batch: list[dict[str, str]]) -> None:
        """A batch failed: it goes first again (entries queued meanwhile stay behind it)."""
        for update in reversed(batch):
            key = (update["event_id"], update["status"])
            if key not in self._keys:
                self._items.appendleft(key)
                self._keys.add(key)


Ack = tuple[str, DeliveryStatus]


class DeliveryTracker:
    """Which ``processing``/``processed`` acks a worker's traffic implies (docs/protocol.md §5 item 7).

    Keys are payload ``uuid``\\ s (the server injects one into every inbound payload).

    * an inbound ``user`` message waits; its ``isReplay`` echo (the agent started it) →
      ``processing``; the next ``result`` → ``processed`` for every started one (without echoes,
      the oldest waiting one);
    * any other inbound message is ``processed`` once handed to the agent's side;
    * a uuid already processed that comes again is acknowledged ``processed`` again.
    """

    __slots__ = ("_done", "_started", "_waiting")

    def __init__(self, capacity: int = 2000) -> None:
        self._waiting: dict[str, None] = {}
        self._started: dict[str, None] = {}
        self._done = BoundedUUIDSet(capacity)

    @property
    def waiting(self) -> tuple[str, ...]:
        return tuple(self._waiting)

    @property
    def started(self) -> tuple[str, ...]:
        return tuple(self._started)

    def inbound(self, payload: Mapping[str, Any]) -> list[Ack]:
        uid = payload.get("uuid")
        if not isinstance(uid, str) or not uid:
            return []
        if uid in self._done:
            return [(uid, "processed")]
        if payload.get("type") == USER:
            if uid not in self._started:
                self._waiting[uid] = None
            return []
        self._done.add(uid)
        return [(uid, "processed")]

    def outbound(self, message: Mapping[str, Any]) -> list[Ack]:
        kind = message.get("type")
        if kind == USER and message.get("isReplay"):
            uid = message.get("uuid")
            if isinstance(uid, str) and uid in self._waiting:
                del self._waiting[uid]
                self._started[uid] = None
                return [(uid, "processing")]
            return []
        if kind == RESULT:
            finished = list(self._started) or list(self._waiting)[:1]
            for uid in finished:
                self._started.pop(uid, None)
                self._waiting.pop(uid, None)
                self._done.add(uid)
            return [(uid, "processed") for uid in finished]
        return []


# --- worker status -------------------------------------------------------------------

StatusReport = tuple[str, dict[str, Any] | None]


class WorkerStatusTracker:
    """The ``worker_status`` a session's traffic implies (v2 reports it; the server does not
    derive it): ``running`` when a turn starts (a replayed prompt or ``system/init``) or a
    permission prompt is resolved; ``requires_action`` (with details) while a ``can_use_tool``
    is open; ``idle`` on ``result``. Each method returns a report only when something changed."""

    __slots__ = ("_open", "status")

    def __init__(self) -> None:
        self.status = "idle"
        self._open: dict[str, dict[str, Any]] = {}  # open can_use_tool requests by request_id

    def _to(self, status: str) -> StatusReport | None:
        details = next(reversed(self._open.values())) if status == "requires_action" and self._open else None
        if status == self.status and status != "requires_action":
            return None
        self.status = status
        return status, details

    def outbound(self, message: Mapping[str, Any]) -> StatusReport | None:
        kind = message.get("type")
        if (kind == USER and message.get("isReplay")) or (kind == SYSTEM and message.get("subtype") == "init"):
            return None if self._open else self._to("running")
        if kind == CONTROL_REQUEST and control_subtype(message) == CAN_USE_TOOL:
            rid = request_id_of(message)
            req = request_payload(message) or {}
            if rid is None:
                return None
            self._open[rid] = {
                "tool_name": req.get("tool_name"),
                "action_description": req.get("description") or req.get("title") or req.get("tool_name"),
                "request_id": rid,
                "tool_use_id": req.get("tool_use_id"),
            }
            return self._to("requires_action")
        if kind == CONTROL_CANCEL_REQUEST:
            return self._resolved(request_id_of(message))
        if kind == RESULT:
            self._open.clear()
            return self._to("idle")
        return None

    def inbound(self, message: Mapping[str, Any]) -> StatusReport | None:
        if message.get("type") == CONTROL_RESPONSE:
            return self._resolved(response_request_id(message))
        return None

    def _resolved(self, request_id: str | None) -> StatusReport | None:
        if request_id is None or self._open.pop(request_id, None) is None:
            return None
        return self._to("requires_action" if self._open else "running")
