"""The JSON shapes of records: the session_update frame carries worker health (docs/protocol.md §8.4)."""

from __future__ import annotations

import dataclasses

import orjson

from tether.protocol.ids import SessionId
from tether.server.store.records import SessionRecord
from tether.server.views import session_json, session_update_frame

SESSION = SessionRecord(SessionId("01hzzzzzzzzzzzzzzzzzzzzzzz"), "org_1", None, None, "code", "Fix it", True, "running",
                        None, None, None, None, 2, "running", 100.0, None, None, 7, 1.0, 2.0, None, None, None)


def frame(session: SessionRecord, at: float) -> dict[str, object]:
    return dict(orjson.loads(session_update_frame(session, at, 60.0).frame))


def test_the_frame_carries_worker_health() -> None:
    assert frame(SESSION, 150.0) == {"type": "session_update", "session_id": f"session_{SESSION.id}",
                                     "status": "running", "title": "Fix it", "sequence_num": 7,
                                     "worker": {"connected": True, "status": "running", "epoch": 2}}
    assert frame(SESSION, 160.0)["worker"] == {"connected": False, "status": "running", "epoch": 2}  # TTL lapsed
    archived = dataclasses.replace(SESSION, status="archived", archived_at=3.0, archive_reason="user")
    assert frame(archived, 150.0)["archive_reason"] == "user"


def test_s2_worker_is_the_frame_worker_with_last_seen() -> None:
    body = session_json(SESSION, at=150.0, heartbeat_ttl_s=60.0, prefix="cse_")
    assert body["id"] == f"cse_{SESSION.id}" and body["tags"] == [] and body["session_context"] == {}
    assert body["worker"] == {**frame(SESSION, 150.0)["worker"], "last_seen": body["worker"]["last_seen"]}  # type: ignore[dict-item]
    assert body["environment"] == {"online": None}
