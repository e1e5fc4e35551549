"""The render child process: answers, deadlines, a stuck child killed, a bounded queue."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import eventually
from tether.errors import RateLimited
from tether.server.web.renderer import Renderer

pytestmark = pytest.mark.anyio
ITEMS = [{"type": "markdown", "text": "*hi*"}, {"type": "code", "text": "x = 1", "language": "python"}, None]


async def test_renders_in_a_child_process_and_stops_it() -> None:
    renderer = Renderer()
    try:
        html = await renderer.render(ITEMS)
        assert html[0] == "<p><em>hi</em></p>\n" and '<span class="n">x</span>' in html[1] and html[2] == ""
        child = renderer._child
        assert child is not None and child.returncode is None
        assert await renderer.render(ITEMS) == html  # the same child again
        assert renderer._child is child
    finally:
        await renderer.close()
    assert child.returncode is not None


async def test_a_child_that_does_not_answer_in_time_is_replaced() -> None:
    renderer = Renderer(kill_after_s=0.001)  # no child answers that fast (it has to start first)
    try:
        assert await renderer.render(ITEMS) == ["", "", ""]
        assert renderer._child is None
        renderer.kill_after_s = 30
        assert (await renderer.render(ITEMS))[0] == "<p><em>hi</em></p>\n"
    finally:
        await renderer.close()


async def test_the_queue_is_bounded() -> None:
    renderer = Renderer(max_pending=2)
    try:
        first = [asyncio.create_task(renderer.render(ITEMS)) for _ in range(2)]
        await eventually(lambda: renderer.pending == 2, message="both admitted (one waits its turn)")
        with pytest.raises(RateLimited) as refused:
            await renderer.render(ITEMS)
        assert refused.value.retry_after >= 1
        assert all(len(h) == 3 for h in await asyncio.gather(*first))
        assert renderer.pending == 0
    finally:
        await renderer.close()
