"""What the browser tests do again and again: sessions through the API, pages, prompts, axe."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from playwright.sync_api import expect


def user_message(text: str) -> dict[str, Any]:
    return {"type": "user", "uuid": str(uuid.uuid4()), "session_id": "", "parent_tool_use_id": None,
            "message": {"role": "user", "content": text}}


def new_session(api: httpx.Client, env_id: str, prompt: str | None = None, title: str | None = None) -> str:
    body: dict[str, Any] = {"environment_id": env_id, "events": [user_message(prompt)] if prompt else []}
    if title:
        body["title"] = title
    r = api.post("/v1/sessions", json=body)
    assert r.status_code == 200, r.text
    return str(r.json()["id"])


def post(api: httpx.Client, sid: str, *events: dict[str, Any]) -> None:
    r = api.post(f"/v1/sessions/{sid}/events", json={"events": list(events)})
    assert r.status_code == 200, r.text


def open_session(page: Any, sid: str) -> None:
    page.goto(f"/code/{sid}")
    expect(page.locator("body")).to_have_attribute("data-socket", "open")


def send(page: Any, text: str) -> None:
    box = page.get_by_role("textbox", name="Prompt", exact=True)
    box.fill(text)
    box.press("Enter")
    expect(box).to_have_value("")


def run_axe(page: Any, source: str | None, where: str) -> list[str]:
    """The serious and critical axe-core findings on ``page`` (none when axe is unavailable)."""
    if source is None:
        return []
    page.evaluate(source)
    violations = page.evaluate("""async () => {
      const r = await axe.run(document, {resultTypes: ['violations']});
      return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                     nodes: v.nodes.slice(0, 4).map(n => n.target.join(' '))}));
    }""")
    return [f"{where}: {v['impact']} {v['id']} ({v['help']}) at {v['nodes']}" for v in violations
            if v["impact"] in ("serious", "critical")]
