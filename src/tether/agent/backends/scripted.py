"""The ``scripted`` backend: an offline, deterministic model driven by a scenario file."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from tether.agent.backends.base import ModelBackend, ModelError, ModelRequest, ModelStream
from tether.agent.scenario import DEFAULT_SCENARIO, Emit, Fail, ScriptedModel, Wait, parse_scenario

SCRIPTED_MODEL = "tether-scripted"


class ScriptedStream(ModelStream):
    def __init__(self, actions: list[Emit | Wait | Fail], request_id: str) -> None:
        self._actions = actions
        self.request_id = request_id

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        for action in self._actions:
            if isinstance(action, Wait):
                await asyncio.sleep(action.seconds)  # the scripted model's own pacing
            elif isinstance(action, Fail):
                raise ModelError(action.message, action.status)
            else:
                yield action.event


class ScriptedBackend(ModelBackend):
    name = "scripted"
    api_key_source = "none"

    def __init__(self, scenario_text: str | None = None, default_model: str = SCRIPTED_MODEL) -> None:
        self.model = ScriptedModel(parse_scenario(scenario_text if scenario_text is not None else DEFAULT_SCENARIO))
        self.default_model = default_model

    async def open(self, request: ModelRequest) -> ModelStream:
        input_tokens = max(1, len(json.dumps(request.messages, ensure_ascii=False)) // 4)
        actions = self.model.play(request.messages, request.model, input_tokens)
        return ScriptedStream(actions, f"req_scripted_{self.model.requests:04d}")
