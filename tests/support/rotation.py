"""Worker-token rotation as a bridge does it (docs/flows.md §5), for session-host tests."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx

from tests.support.worker import auth, take_work


async def redispatch(client: httpx.AsyncClient, env: dict[str, Any], session_id: str, owner: str) -> str:
    """Before a worker token expires: bridge/reconnect (E7) for the session, then take the
    re-dispatched work item. Returns its fresh worker token (for ``SessionHost.set_token``)."""
    r = await client.post(f"/v1/environments/{env['environment_id']}/bridge/reconnect",
                          json={"session_id": session_id}, headers=auth(owner))
    assert r.status_code == 200, r.text
    _, token = await take_work(client, env)
    return token


def jwt_exp(token: str) -> int:
    """The ``exp`` claim of a JWT, read without checking its signature."""
    payload = token.split(".")[1]
    return int(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["exp"])
